"""The asyncio client: every action an operation in the history, and frame-to-operation correlation."""

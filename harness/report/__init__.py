"""Rendering results: console, Markdown, JUnit and the self-contained HTML report."""

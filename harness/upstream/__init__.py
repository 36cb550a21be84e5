"""Stand-in services a target talks to: the fake OpenAI-compatible upstream."""

"""The target: a frozen description of the service under test and how it is loaded."""

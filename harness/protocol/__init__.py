"""The wire protocol, sans I/O: frames and the adapters that encode and classify them."""

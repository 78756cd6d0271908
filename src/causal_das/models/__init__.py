"""Networks and their training loops."""

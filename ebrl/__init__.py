"""ebrl."""

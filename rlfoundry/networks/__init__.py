"""Torsos (MLP, CNN), heads and the composites algorithms build from them."""

"""The networks: each family's builder, its `Site` (prefix and suffix at a layer), its trainer and its
loader; `training` holds the loop and the weight files the three families share."""

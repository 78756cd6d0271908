"""DAS: sites, rotations, the fast engine and the pyvene bridge. Knows nothing of tasks."""

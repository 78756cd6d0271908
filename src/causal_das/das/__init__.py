"""DAS itself, knowing nothing of tasks or models: `site` (where to intervene), `intervention` (the
rotation and the interchange), `data` (the engines' contract), `training` (the loop both engines
share), and the two engines, `engine` (fast, the default) and `pyvene_engine` (the reference)."""

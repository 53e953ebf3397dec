"""erc's stages: each a ``Stage`` (``base``) that declares its inputs, settings and result
files and does its work in ``run``; ``base.execute`` decides from one fingerprint whether
it must run. The main job (``main``) is the list of them over one run folder."""

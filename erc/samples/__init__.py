"""Small sample corpora shipped with erc (see each folder's README.md)."""

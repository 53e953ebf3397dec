# The two set-up commands of the README. Each installs what is missing (.ci/install.sh,
# a no-op once done), then runs.
.PHONY: install run test

install:
	@bash .ci/install.sh

run: install
	.venv/bin/erc run

test: install
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

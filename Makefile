# The two commands of the README (demo, test). Each one does all the set-up it needs, from the
# committed lock (scripts/setup.sh).
.PHONY: demo test lint docs lock test-latest

demo:
	@scripts/setup.sh
	.venv/bin/repspace demo

test:
	@scripts/setup.sh
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint:
	@scripts/setup.sh
	.venv/bin/ruff check .

# The documentation site, into site/ (open site/index.html); fails on any warning: a broken link
# or anchor, a docstring naming an object that does not exist. Live preview: .venv/bin/mkdocs serve
docs:
	@scripts/setup.sh
	.venv/bin/mkdocs build --strict --site-dir site

# Regenerate requirements.lock from the newest releases pyproject.toml allows; then `make test`.
lock:
	scripts/lock.sh

# The suite on the newest allowed releases, in .venv-latest: drift shows up here before users
# see it. Not part of CI (CI installs the lock).
test-latest:
	scripts/latest.sh .venv-latest
	.venv-latest/bin/python -m pytest -q -p no:cacheprovider

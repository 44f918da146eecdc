# The two commands of the README. Each one does all the set-up it needs.
.PHONY: demo test lint

demo:
	@scripts/setup.sh demo
	.venv/bin/repspace demo

test:
	@scripts/setup.sh test
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q

lint:
	@scripts/setup.sh test
	.venv/bin/ruff check .

# The two commands of the README. Each sets up what it needs (idempotent) and then runs.
.PHONY: demo test
demo:
	@.ci/bootstrap.sh
	.venv/bin/fpgaslim demo
test:
	@.ci/bootstrap.sh --test
	.venv/bin/python -m pytest -q

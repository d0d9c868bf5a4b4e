# The two commands of the README (demo, test). Each sets up what it needs (idempotent) and then
# runs; `make test` also builds the documentation and checks its figures (what CI runs).
.PHONY: demo test docs claims
demo:
	@.ci/bootstrap.sh
	.venv/bin/fpgaslim demo
test:
	@.ci/bootstrap.sh --test
	.venv/bin/python -m pytest -q
	$(MAKE) docs claims
# the MkDocs site (mkdocs.yml) into site/ (git-ignored); strict: a broken link or page fails
docs:
	@.ci/bootstrap.sh --test
	.venv/bin/mkdocs build --strict
# every measured figure of README.md and docs/ against its committed result file (stdlib only)
claims:
	python3 benchmarks/claims.py

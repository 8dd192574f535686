# gmbook: build the book and run its tests. Every target sets itself up on a fresh
# machine (Debian/Ubuntu or macOS, Python 3.10-3.12): it creates .venv if absent and
# installs the exact versions of requirements-lock.txt (torch first, see TORCH below).
#
#   make book       executed HTML book in _build/html (re-executes what changed);
#                   STRICT=1 fails on a chapter over the time budget, as CI does
#   make test       the test suite
#   make pdf        the PDF in _build/latex/gmbook.pdf (reuses executed outputs)
#   make chapter CH=book/diffusion/ddpm.md   execute one chapter, time its cells
#   make notebooks  regenerate the paired .ipynb of every chapter from its .md
#   make bench      the benchmark of every model family: benchmarks/results/results.{json,md}
#   make lock       re-resolve requirements.txt into requirements-lock.txt (needs PyPI)
#   make clean      remove build outputs (keeps .venv); `make distclean` removes .venv too

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed before the requirements so that pip never swaps in another build.
# On Linux, TORCH_INDEX=https://download.pytorch.org/whl/cpu gives the small CPU-only build.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
JB_FLAGS ?= -W -n --keep-going
STAMP := $(VENV)/.gmbook-installed
# PyTorch's threads wait passively instead of spinning: a busy 2-core machine then slows
# the tests and the build down gracefully instead of tenfold.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY
CHAPTERS = $(shell grep -rl --include='*.md' '^kernelspec:' book)

.PHONY: help book test bench pdf notebooks chapter lock clean distclean check-latex setup

help:
	@sed -n '1,14p' Makefile | sed 's/^# \{0,1\}//'

setup: $(STAMP)

$(STAMP): requirements-lock.txt code/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null || \
	  { echo "gmbook needs Python 3.10, 3.11 or 3.12 (requirements-lock.txt pins those); '$(PYTHON)' is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import torch' 2>/dev/null || \
	  $(BIN)/python -m pip install $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install -r requirements-lock.txt
	@touch $@

# STRICT=1 makes a chapter over the execution budget fail the build (CI sets it); a
# reader's build only reports slow chapters.
STRICT ?= 0

book: $(STAMP)
	GMBOOK_STRICT_BUDGET=$(STRICT) $(BIN)/jupyter-book build . $(JB_FLAGS)

test: $(STAMP)
	$(BIN)/python -m pytest

# A benchmark, not a test: it asserts nothing and its timings depend on the machine.
# Options go through BENCH_ARGS, e.g. make bench BENCH_ARGS="--datasets two_moons --n 500".
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

check-latex:
	@command -v xelatex >/dev/null && command -v latexmk >/dev/null || { \
	  echo "make pdf needs xelatex and latexmk, which are not installed. Install them with:"; \
	  echo "  Debian/Ubuntu: sudo apt-get install texlive-xetex texlive-latex-extra texlive-fonts-recommended fonts-freefont-otf latexmk make"; \
	  echo "  macOS:         brew install --cask mactex-no-gui   (then open a new terminal)"; \
	  exit 1; }

# `book` first: it executes nothing when the cache is current, and fills it otherwise,
# so the PDF never runs a notebook itself.
pdf: check-latex book
	$(BIN)/jupyter-book build . --builder pdflatex $(JB_FLAGS)
	@echo "PDF: _build/latex/gmbook.pdf"

chapter: $(STAMP)
	@test -n "$(CH)" || { echo 'usage: make chapter CH=book/<part>/<name>.md'; exit 1; }
	$(BIN)/python book/_ext/run_chapter.py $(CH)

# The lock pins every package (but torch) for Python 3.10-3.12; requirements.txt keeps
# the ranges. Run after changing requirements.txt, then commit both files.
lock: $(STAMP)
	$(BIN)/python .ci/lock.py

notebooks: $(STAMP)
	$(BIN)/jupytext --update --to ipynb $(CHAPTERS)  # --update keeps cell ids stable

clean:
	rm -rf _build book/api .pytest_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

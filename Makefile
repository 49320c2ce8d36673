# duanka: `make demo` and `make test` work on a fresh clone; each sets up
# what it needs (.venv, Python dependencies, Debian tools, broker jars).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install tools test lint typecheck unit integration demo clean

install: $(STAMP)

# setup.py compiles rules/ with mypyc (about a minute): again whenever a source changes
$(STAMP): pyproject.toml setup.py $(wildcard rules/*.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests and the demo use: Java and Maven (the local Kafka
# broker and the fetch of its jars), kcat (a third Kafka client the
# integration tests check), curl (the docs' call of the pre-opening check),
# openssl (the access-control test's certificates), docker-compose (validates
# docker-compose.yml without an engine), and Chromium, its WebDriver and a
# Chinese font (the police console's browser test and screenshot).
tools:
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v kcat >/dev/null || missing="$$missing kcat"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	fc-list :lang=zh 2>/dev/null | grep -q . || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m 'not integration'

integration: install tools
	$(BIN)/pytest -m integration

test: install tools lint typecheck
	$(BIN)/pytest

demo: install tools
	$(BIN)/duanka demo $(ARGS)

clean:
	rm -rf $(VENV) .duanka .mypy_cache .ruff_cache .pytest_cache build .mypyc_cache
	rm -f *.so rules/*.so rules/compiled.json

# hwsim from a fresh machine in two commands, each installing what is missing first and
# nothing twice (a second call reuses the install; editing pyproject.toml redoes it):
#   make run    install, then the main job (hwsim study run quick -> runs/quick/report.html)
#   make test   install, then the linter and the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
# apt-get needs root: as another user it runs through sudo
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test install

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d /usr/share/datasets/fashion-mnist || $(SUDO) apt-get install -y dataset-fashion-mnist
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/hwsim study run quick

test: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/python -m pytest -q

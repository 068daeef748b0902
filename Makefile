# make run   - create .venv, install, serve config.toml (SMTP 127.0.0.1:2525, HTTP 127.0.0.1:8025)
# make test  - install what the tests need (Debian packages too, when missing), run the suite
# make bench - the benchmarks in bench/ (see README)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench venv test-debs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(STAMP)

# A self-signed development certificate for STARTTLS, made once.
var/tls/cert.pem:
	mkdir -p var/tls
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=localhost \
	    -keyout var/tls/key.pem -out var/tls/cert.pem 2>/dev/null
	chmod 600 var/tls/key.pem

run: $(STAMP) var/tls/cert.pem
	$(BIN)/mta serve -c config.toml

# The Debian packages the suite runs for real (swaks with TLS and AUTH, Unbound, Redis, ...),
# checked by capability and installed when missing (with sudo unless root); fails when a
# capability is still missing afterwards.
test-debs:
	@PYTHON=$(PYTHON) sh tests/support/system-deps.sh

test: $(STAMP) test-debs
	$(BIN)/ruff check mta tests bench
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check mta tests bench

# matplotlib draws the plots; Postfix (for --peer postfix) is installed by bench/postfix.py.
bench: $(STAMP) test-debs
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf var build *.egg-info

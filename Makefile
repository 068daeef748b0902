# make run   - create .venv, install, serve config.toml (SMTP 127.0.0.1:2525, HTTP 127.0.0.1:8025)
# make test  - install what the tests need (Debian packages too, when missing), run the suite
# make bench - the benchmarks in bench/ (see README)
# make install [DESTDIR=] [PREFIX=/opt/mta] - mta in its own venv, on PATH, with its systemd
#              unit; make uninstall takes it away again (never the config or the spool)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench venv test-debs clean wheel install uninstall

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
	rm -rf var build dist *.egg-info

# --- install ---------------------------------------------------------------------------
# A venv at $(PREFIX) holds mta and its dependencies, apart from the system's Python
# packages; $(BINDIR)/mta links to it. The unit, sysusers.d and tmpfiles.d files go in the
# /usr/local/lib search paths of systemd, so a local edit belongs in /etc (`systemctl edit
# mta`) and survives reinstalling. DESTDIR stages the tree (nothing is created on this system
# then: no user, no daemon-reload); bin/mta finds the python beside it, so the staged tree
# also runs where it is staged, which is how tests/install checks it.
PREFIX      ?= /opt/mta
BINDIR      ?= /usr/local/bin
SYSCONFDIR  ?= /etc
UNITDIR     ?= /usr/local/lib/systemd/system
SYSUSERSDIR ?= /usr/local/lib/sysusers.d
TMPFILESDIR ?= /usr/local/lib/tmpfiles.d
SPOOLDIR    ?= /var/spool/mta
LOGDIR      ?= /var/log/mta
MTA_USER    ?= mta
# `mta init` writes the first config: the server's name (default: this host's FQDN) and
# more arguments, e.g. MTA_INIT_ARGS="--tls --listen 0.0.0.0:25".
MTA_HOSTNAME ?=
MTA_INIT_ARGS ?=
# Extra pip arguments for the dependencies, e.g. "--no-index --find-links DIR" offline.
PIP_INSTALL_ARGS ?=
# Where the wheel is built (tests/install points these outside the checkout).
BUILDDIR    ?= build
DISTDIR     ?= dist
DEST        := $(DESTDIR)$(PREFIX)
PIP_QUIET   := --quiet --disable-pip-version-check
HAS_BUILD_DEPS := import importlib.util as u, sys; sys.exit(not u.find_spec('setuptools') or not \
    (u.find_spec('wheel') or u.find_spec('setuptools.command.bdist_wheel')))

# The wheel is built from a copy of the sources (no stale build/ or stray files in it), and
# without build isolation when this Python has setuptools and bdist_wheel (setuptools >= 70.1
# or the wheel package), so that no index is needed.
wheel:
	rm -rf $(BUILDDIR)/src $(DISTDIR)/mta-*.whl
	mkdir -p $(BUILDDIR)/src $(DISTDIR)
	tar --exclude=__pycache__ --exclude='*.pyc' -cf - pyproject.toml README.md mta \
	    | tar -xf - -C $(BUILDDIR)/src
	$(PYTHON) -m pip wheel $(PIP_QUIET) --no-deps -w $(DISTDIR) \
	    $$($(PYTHON) -c "$(HAS_BUILD_DEPS)" 2>/dev/null && echo --no-build-isolation) $(BUILDDIR)/src

install: wheel
	[ -x $(DEST)/bin/python ] || $(PYTHON) -m venv $(DEST)
	@# The unit's ProtectHome=yes hides /root and /home: a Python there (pyenv) cannot start.
	@base=$$($(DEST)/bin/python -c 'import sys; print(sys.base_prefix)'); case $$base in \
	    /root/*|/home/*) echo "make install: $$base is under /root or /home, which the unit" \
	        "hides (ProtectHome=yes): use PYTHON=/usr/bin/python3"; [ -n "$(DESTDIR)" ];; esac
	$(DEST)/bin/python -m pip install $(PIP_QUIET) $(PIP_INSTALL_ARGS) $(DISTDIR)/mta-*.whl
	$(DEST)/bin/python -m pip install $(PIP_QUIET) --no-deps --force-reinstall $(DISTDIR)/mta-*.whl
	@# pip wrote bin/mta for the python at $(DEST); make it find the python next to itself.
	{ printf '%s\n' '#!/bin/sh' \
	    "'''exec' \"\$$(dirname -- \"\$$(readlink -f -- \"\$$0\")\")/python\" \"\$$0\" \"\$$@\"" "' '''"; \
	    sed 1d $(DEST)/bin/mta; } > $(DEST)/bin/mta.new
	chmod 755 $(DEST)/bin/mta.new && mv -f $(DEST)/bin/mta.new $(DEST)/bin/mta
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) \
	    $(DESTDIR)$(TMPFILESDIR) $(DEST)/share/doc/mta
	ln -sfr $(DEST)/bin/mta $(DESTDIR)$(BINDIR)/mta
	sed -e 's|/opt/mta/|$(PREFIX)/|g' -e 's|/etc/mta/|$(SYSCONFDIR)/mta/|g' \
	    -e 's|/var/spool/mta|$(SPOOLDIR)|g' systemd/mta.service > $(DESTDIR)$(UNITDIR)/mta.service
	sed -e 's|/var/spool/mta|$(SPOOLDIR)|g' systemd/mta.sysusers > $(DESTDIR)$(SYSUSERSDIR)/mta.conf
	sed -e 's|/var/spool/mta|$(SPOOLDIR)|g' systemd/mta.tmpfiles > $(DESTDIR)$(TMPFILESDIR)/mta.conf
	chmod 644 $(DESTDIR)$(UNITDIR)/mta.service $(DESTDIR)$(SYSUSERSDIR)/mta.conf \
	    $(DESTDIR)$(TMPFILESDIR)/mta.conf
	install -m 644 README.md $(DEST)/share/doc/mta/README.md
	@if [ -z "$(DESTDIR)" ]; then \
	    if command -v systemd-sysusers >/dev/null && systemd-sysusers $(SYSUSERSDIR)/mta.conf; then :; \
	    elif ! getent passwd $(MTA_USER) >/dev/null; then \
	        echo "creating system user $(MTA_USER)"; \
	        useradd --system --user-group --home-dir $(SPOOLDIR) --no-create-home \
	            --comment "mta message transfer agent" \
	            --shell /usr/sbin/nologin $(MTA_USER); \
	    fi; \
	    command -v systemd-tmpfiles >/dev/null && systemd-tmpfiles --create $(TMPFILESDIR)/mta.conf \
	        || install -d -o $(MTA_USER) -g $(MTA_USER) -m 0750 $(SPOOLDIR); \
	fi
	@# A first, annotated config when there is none. Under DESTDIR the directories it makes
	@# are staged too, and the paths written in the config lose the DESTDIR prefix. A failed
	@# init (e.g. this host has no fully qualified name: set MTA_HOSTNAME) is only a warning.
	@conf=$(DESTDIR)$(SYSCONFDIR)/mta/mta.toml; \
	if [ ! -e $$conf ] && $(DEST)/bin/mta init --help >/dev/null 2>&1; then \
	    if $(DEST)/bin/mta init --dir $(DESTDIR)$(SYSCONFDIR)/mta --spool $(DESTDIR)$(SPOOLDIR) \
	            --log-dir $(DESTDIR)$(LOGDIR) --user $(MTA_USER) \
	            $(if $(MTA_HOSTNAME),--hostname $(MTA_HOSTNAME)) $(MTA_INIT_ARGS) \
	            $(if $(DESTDIR),>/dev/null); then \
	        $(if $(DESTDIR),sed -i 's|$(patsubst %/,%,$(DESTDIR))/|/|g' $$conf;) :; \
	    else echo "make install: no config written; run: mta init --hostname mail.example.com"; fi; \
	fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "installed mta in $(DEST); start it with: systemctl enable --now mta"

uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then \
	    systemctl disable --now mta.service 2>/dev/null || true; fi
	rm -f $(DESTDIR)$(BINDIR)/mta $(DESTDIR)$(UNITDIR)/mta.service \
	    $(DESTDIR)$(SYSUSERSDIR)/mta.conf $(DESTDIR)$(TMPFILESDIR)/mta.conf
	@# Only a venv of ours: PREFIX=/usr by mistake must not remove /usr.
	if [ -f $(DEST)/pyvenv.cfg ] && [ -d $(DEST)/share/doc/mta ]; then rm -rf $(DEST); fi
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "kept: $(SYSCONFDIR)/mta, $(SPOOLDIR), $(LOGDIR) and the user $(MTA_USER)"

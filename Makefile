# Teapot: `make run` starts everything, `make test` runs the tests. See README.md.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Local use defaults to debug + demo mode; production sets its own environment.
export DEBUG ?= 1
export TEAPOT_DEMO ?= 1

.PHONY: run test lint format venv clean vendor vendor-calendar check-deploy bench bench-selection bench-reservations \
	bench-reservations-month

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# The supervisor runs the lab 10x faster than real time unless TEAPOT_LAB_SPEED says otherwise.
# (No shell in this recipe: make execs python directly, so Ctrl-C reaches it alone.)
run: venv
	$(PY) -m teapot_portal.supervisor

# Two pytest-xdist workers (each with its own test database); PYTEST_WORKERS=0 runs serially.
PYTEST_WORKERS ?= 2
test: venv
	$(PY) -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Benchmarks (not part of make test): figures and baselines printed, nothing asserted.
# BENCH_ARGS go to the inventory benchmark, BENCH_SELECTION_ARGS to the selection one (e.g. --quick).
bench: venv
	$(PY) bench/inventory.py $(BENCH_ARGS)
	$(PY) bench/selection.py $(BENCH_SELECTION_ARGS)

bench-selection: venv
	$(PY) bench/selection.py $(BENCH_SELECTION_ARGS)

# Reservation admission at 10,000 hosts and 50,000 bookings (BENCH_RESERVATIONS_ARGS, e.g. --quick, --profile).
bench-reservations: venv
	$(PY) bench/reservations_admission.py $(BENCH_RESERVATIONS_ARGS)

# A simulated month of bookings in the lab (Ready at start, utilisation, pre-emptions, waits) with the
# no-anticipation baseline in the same run; ~30 min on 2 cores (BENCH_MONTH_ARGS, e.g. --quick, --days 7).
bench-reservations-month: venv
	$(PY) bench/reservations_month.py $(BENCH_MONTH_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Production settings must pass Django's deployment checks with no warnings.
check-deploy: venv
	DEBUG=0 TEAPOT_DEMO=0 SECRET_KEY=check-deploy-$$(date +%s)-0123456789abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ \
	ALLOWED_HOSTS=teapot.example.org DATABASE_URL=postgres://teapot@db.invalid:5432/teapot \
	CELERY_BROKER_URL=redis://broker.invalid:6379/0 $(PY) manage.py check --deploy --fail-level WARNING

# Re-vendor front-end assets from the npm registry (pinned; the results are committed).
vendor:
	bash tools/vendor.sh

# The calendar libraries of the reservation pages (FullCalendar, vis-timeline): pinned, sha512-checked, committed.
vendor-calendar:
	bash tools/vendor-calendar.sh

clean:
	-$(PY) -m teapot_portal.embedded stop
	rm -rf $(VENV) var

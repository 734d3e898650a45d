# notiflow — PGXS build of the extension, plus the project's entry points:
#   make demo   installs what is missing, builds, starts a local cluster, runs a sample workflow
#   make test   installs what is missing, builds, runs every test (pg_regress + pgTAP)
#   make bench  runs the benchmarks in bench/ and prints one table (durable settings, printed);
#               make bench QUICK=1 is the short smoke run that make test runs

EXTENSION   = notiflow
EXTVERSION  = 0.1
MODULE_big  = notiflow
OBJS        = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c) $(wildcard worker/*.c) $(wildcard worker/providers/*.c)))

# The install script of a version is generated from the readable fragments in
# src/sql/ (applied in file-name order).  Upgrade scripts notiflow--A--B.sql
# are hand-written in src/sql/upgrade/ and installed as they are.
DATA_built  = $(EXTENSION)--$(EXTVERSION).sql
DATA        = $(wildcard src/sql/upgrade/$(EXTENSION)--*--*.sql)

REGRESS      = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=$(EXTENSION)

PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/worker
PG_CFLAGS   = -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers \
              -Wmissing-prototypes -Werror
SHLIB_LINK  = -lcurl -lssl -lcrypto -lrdkafka
EXTRA_CLEAN = $(DATA_built) worker/provider_list.h results regression.diffs regression.out

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on every header of the project (PGXS tracks no header dependencies)
$(OBJS): $(wildcard src/*.h worker/*.h) worker/provider_list.h

$(EXTENSION)--$(EXTVERSION).sql: $(sort $(wildcard src/sql/[0-9]*.sql))
	cat $^ > $@

# one PROVIDER(kind) line per adapter file in worker/providers/
PROVIDER_FILES = $(sort $(wildcard worker/providers/*.c))
worker/provider_list.h: $(PROVIDER_FILES) Makefile
	for f in $(basename $(notdir $(PROVIDER_FILES))); do echo "PROVIDER($$f)"; done > $@
worker/provider_registry.o worker/provider_registry.bc: worker/provider_list.h

.PHONY: demo demo-stop test bench deps
deps:
	test/install-deps.sh

demo:
	test/demo.sh

demo-stop:
	@if [ -f .demo/env ]; then . ./.demo/env && . test/lib/cluster.sh && cluster_stop && rm -f .demo/env; fi
	@for p in .demo/http.pid .demo/smtp.pid .demo/push.pid .demo/postgrest.pid .demo/web.pid; do [ -f $$p ] && kill $$(cat $$p) 2>/dev/null; rm -f $$p; done; true

test:
	test/run-tests.sh

bench:
	QUICK=$(QUICK) bench/run.sh

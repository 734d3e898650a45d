/*
 * notiflow.c — module entry point: _PG_init defines the configuration
 * variables (GUCs, all prefixed "notiflow.").
 *
 * The library works both when loaded on demand by its SQL functions (plain
 * SQL use: triggers, workflows, the engine) and when listed in
 * shared_preload_libraries, which later parts use to register the background
 * workers that deliver notifications.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "notiflow.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

int			notiflow_max_payload_size_kb = 256;

const char *const notiflow_channel_names[] = {"email", "sms", "push", "chat", "webhook"};

/* Defines the GUCs. */
void
_PG_init(void)
{
	DefineCustomIntVariable("notiflow.max_payload_size",
							"Largest trigger payload accepted.",
							"A trigger whose payload is larger is rejected with SQLSTATE 54000.",
							&notiflow_max_payload_size_kb,
							256,
							1,
							1024 * 1024,
							PGC_USERSET,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	MarkGUCPrefixReserved("notiflow");
}

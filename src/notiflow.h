/*
 * notiflow.h — declarations shared by every part of the extension:
 * configuration (GUC) variables and the vocabularies of channels and
 * statuses.  Each subsystem has its own header next to its source file.
 */
#ifndef NOTIFLOW_H
#define NOTIFLOW_H

#include "postgres.h"

/* GUC variables (defined in notiflow.c) */
extern int	notiflow_max_payload_size_kb;

/* Channels an action node or provider can serve. */
typedef enum NotiflowChannel
{
	CHANNEL_EMAIL,
	CHANNEL_SMS,
	CHANNEL_PUSH,
	CHANNEL_CHAT,
	CHANNEL_WEBHOOK
} NotiflowChannel;

extern const char *const notiflow_channel_names[];

/* The OID of relation notiflow.<name>, or InvalidOid when there is none. */
extern Oid	notiflow_relid(const char *name);

#endif							/* NOTIFLOW_H */

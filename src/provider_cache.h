/*
 * provider_cache.h — per-backend cache of the enabled providers of each channel.
 */
#ifndef NOTIFLOW_PROVIDER_CACHE_H
#define NOTIFLOW_PROVIDER_CACHE_H

#include "postgres.h"
#include "nodes/pg_list.h"

#include "notiflow.h"

/* The enabled providers of a channel, best first (a List of ProviderRef *; do not modify). */
extern List *provider_cache_channel(NotiflowChannel channel);

#endif							/* NOTIFLOW_PROVIDER_CACHE_H */

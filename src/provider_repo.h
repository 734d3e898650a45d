/*
 * provider_repo.h — data access for providers.
 */
#ifndef NOTIFLOW_PROVIDER_REPO_H
#define NOTIFLOW_PROVIDER_REPO_H

#include "postgres.h"
#include "utils/jsonb.h"

typedef struct ProviderRow
{
	char	   *name;
	char	   *channel;
	char	   *kind;
	Jsonb	   *config;
	bool		enabled;
} ProviderRow;

/* Loads a provider by name; false when there is none. */
extern bool provider_repo_load(const char *name, ProviderRow *out);

#endif							/* NOTIFLOW_PROVIDER_REPO_H */

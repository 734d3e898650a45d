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

/* A provider's circuit breaker state. */
typedef struct CircuitState
{
	char		state[16];		/* closed, open, half_open */
	int			failures;
	double		open_for_ms;	/* since it opened */
} CircuitState;

/* Reads a provider's circuit (closed with no failures when it has no row). */
extern void provider_repo_circuit(const char *name, CircuitState *out);

/* Turns an open circuit half-open for one probe; false when another took it. */
extern bool provider_repo_circuit_probe(const char *name);

/* Records an attempt's effect on the circuit: success closes it, failures open it. */
extern void provider_repo_circuit_result(const char *name, bool success, int threshold,
										 const char *error);

#endif							/* NOTIFLOW_PROVIDER_REPO_H */

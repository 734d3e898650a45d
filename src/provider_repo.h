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
	double		probe_for_ms;	/* half-open: since its probe was taken */
} CircuitState;

/* Reads a provider's circuit (closed with no failures when it has no row). */
extern void provider_repo_circuit(const char *name, CircuitState *out);

/*
 * Turns an open circuit half-open for one probe, or takes again the probe of a
 * half-open circuit taken more than lost_after_ms ago; false when another
 * dispatcher took it.
 */
extern bool provider_repo_circuit_probe(const char *name, int lost_after_ms);

/*
 * Gives a probe back that will bring no verdict (its delivery was deferred by
 * the rate limit or its adapter, or its request was only a preliminary one):
 * the circuit is open again, still cooled, and the next claim probes, instead
 * of every delivery of the provider waiting a whole lease for the lost probe.
 */
extern void provider_repo_circuit_release_probe(const char *name);

/* Records an attempt's effect on the circuit: success closes it, failures open it. */
extern void provider_repo_circuit_result(const char *name, bool success, int threshold,
										 const char *error);

#endif							/* NOTIFLOW_PROVIDER_REPO_H */

/*
 * provider_registry.c — the table of provider adapters, by kind.
 *
 * Each file worker/providers/<kind>.c defines `const ProviderAdapter
 * provider_<kind>`; the build lists those files in provider_list.h (see the
 * Makefile), so adding a provider is one new file plus its row in the
 * provider_kinds table.
 */
#include "postgres.h"

#include "provider.h"

#define PROVIDER(kind) extern const ProviderAdapter provider_##kind;
#include "provider_list.h"
#undef PROVIDER

#define PROVIDER(kind) &provider_##kind,
static const ProviderAdapter *const adapters[] = {
#include "provider_list.h"
};
#undef PROVIDER

/* Returns the adapter of a kind. */
const ProviderAdapter *
provider_adapter(const char *kind)
{
	for (int i = 0; i < (int) lengthof(adapters); i++)
		if (strcmp(adapters[i]->kind, kind) == 0)
			return adapters[i];
	return NULL;
}

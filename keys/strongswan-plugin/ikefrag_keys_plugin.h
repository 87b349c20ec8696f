/*
 * ikefrag-keys: a charon plugin that hands the keys of each IKEv2 SA to
 * ikefragd's key socket, so that ikefrag's proxy can re-fragment IKE
 * messages (RFC 7383) without strongSwan's save-keys debugging plugin.
 *
 * Copyright and licence: see LICENSE at the top of the ikefrag repository.
 */

#ifndef IKEFRAG_KEYS_PLUGIN_H_
#define IKEFRAG_KEYS_PLUGIN_H_

#include <plugins/plugin.h>

typedef struct ikefrag_keys_plugin_t ikefrag_keys_plugin_t;

struct ikefrag_keys_plugin_t {
	plugin_t plugin;
};

plugin_t *ikefrag_keys_plugin_create();

#endif

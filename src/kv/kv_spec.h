/* Per-layer KV scheme rules from text ("0-9:window=512+4;10-29:shared=9"),
 * shared by the session API and the CLI; see kv_layers in kvslim.h for the
 * grammar. Also the kvs_kv_type <-> element type mapping. */
#ifndef KVS_KV_SPEC_H
#define KVS_KV_SPEC_H

#include "kv/kv_scheme.h"
#include "kvslim.h"

kvs_dtype kvs_kv_type_dtype(kvs_kv_type t);
/* Rotated-codebook names: "tq3" (keys and values), "tq4k3v", "tq3.5k2.5v"
 * (keys X, values Y bits; X, Y in 2 2.5 3 3.5 4) -> the key and value
 * dtypes (core/tq.h); false for anything else. Shared with the planner. */
bool kvs_kv_tq_from_name(const char *name, kvs_dtype *key_type, kvs_dtype *value_type);

/* Apply the rules to schemes[0..n_layers) (spec may be NULL: no rules), then
 * the defaults the rules left open: q8_0/q4_0 rows are Hadamard-rotated
 * where the head size is a power of two unless a rule set rotate= on that
 * layer. On error nothing is guaranteed about schemes; the message names
 * the offending rule. */
kvs_status kvs_kv_spec_apply(kvs_kv_scheme *schemes, int32_t n_layers, const char *spec);

#endif

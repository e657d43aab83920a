/* Passkey retrieval prompts (a number hidden in repeated filler text, asked
 * for at the end, as in the long-context literature) and exact-match
 * scoring of the answer. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvslim.h"

static const char INTRO[] =
    "There is an important piece of information hidden inside a lot of irrelevant text. "
    "Find it and memorize it. I will quiz you about it.\n";
static const char FILLER[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
static const char QUESTION[] = "\nWhat is the pass key? The pass key is";

const char *kvs_passkey_question(void) { return QUESTION; }

char *kvs_passkey_text(uint32_t n_filler, double depth, uint32_t key) {
    if (!(depth >= 0.0 && depth <= 1.0) || n_filler > (1u << 20)) return NULL;
    char needle[128];
    int nl = snprintf(needle, sizeof needle, "The pass key is %u. Remember it. %u is the pass key. ", key, key);
    size_t fl = sizeof FILLER - 1;
    size_t len = sizeof INTRO - 1 + (size_t)n_filler * fl + (size_t)nl + sizeof QUESTION;
    char *out = malloc(len);
    if (!out) return NULL;
    uint32_t at = (uint32_t)(depth * n_filler + 0.5);
    char *p = out;
    memcpy(p, INTRO, sizeof INTRO - 1);
    p += sizeof INTRO - 1;
    for (uint32_t i = 0; i <= n_filler; i++) {
        if (i == at) { memcpy(p, needle, (size_t)nl); p += nl; }
        if (i == n_filler) break;
        memcpy(p, FILLER, fl);
        p += fl;
    }
    memcpy(p, QUESTION, sizeof QUESTION); /* with its NUL */
    return out;
}

bool kvs_passkey_match(const char *answer, uint32_t key) {
    if (!answer) return false;
    while (*answer && !isdigit((unsigned char)*answer)) answer++;
    char want[16];
    int n = snprintf(want, sizeof want, "%u", key);
    if (strncmp(answer, want, (size_t)n) != 0) return false;
    return !isdigit((unsigned char)answer[n]); /* the whole run of digits */
}

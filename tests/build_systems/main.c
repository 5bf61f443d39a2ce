/*
 * A tiny firmware with two kiln models in one program: it includes both headers, gives each
 * model its own arena and runs both on a fixed input pattern. Each output element is printed as
 * "PREFIX INDEX BITS" (the float's bits in hex), so a test can compare it exactly; the exit
 * status is 0 when both runs succeed.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "digits.h"
#include "kws.h"

static uint8_t kws_arena[KWS_ARENA_BYTES] __attribute__((aligned(KWS_ARENA_ALIGN)));
static uint8_t digits_arena[DIGITS_ARENA_BYTES] __attribute__((aligned(DIGITS_ARENA_ALIGN)));
KWS_ARENA_CHECK(kws_arena);
DIGITS_ARENA_CHECK(digits_arena);

static float kws_in[KWS_IN0_ELEMS], kws_out[KWS_OUT0_ELEMS];
static float digits_in[DIGITS_IN0_ELEMS], digits_out[DIGITS_OUT0_ELEMS];

/* The input pattern tests/build_systems.rs writes as .npy for `kiln run`. */
static void fill(float *x, int n) {
    int i;
    for (i = 0; i < n; i++) {
        x[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    }
}

static void print(const char *prefix, const float *y, int n) {
    int i;
    for (i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &y[i], sizeof bits);
        printf("%s %d %08lx\n", prefix, i, (unsigned long)bits);
    }
}

int main(void) {
    int status;
    fill(kws_in, KWS_IN0_ELEMS);
    fill(digits_in, DIGITS_IN0_ELEMS);
    status = kws_run(kws_arena, kws_in, kws_out);
    status |= digits_run(digits_arena, digits_in, digits_out);
    print("kws", kws_out, KWS_OUT0_ELEMS);
    print("digits", digits_out, DIGITS_OUT0_ELEMS);
    return status;
}

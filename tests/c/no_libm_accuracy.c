/* Measures the --no-libm approximations of kiln_runtime.h against double-precision libm and
 * fails when one exceeds the maximum error documented in the header. Run by tests/c_backend.rs. */
#define KILN_NO_LIBM 1
#include "kiln_runtime.h"
#include <math.h>
#include <stdio.h>
static double rel(double got, double want) { double d = fabs(got - want); double m = fabs(want); return m > 1e-30 ? d / m : d; }
int main(void) {
    double e_exp = 0, e_log = 0, e_sqrt = 0, e_tanh = 0, e_erf = 0, e_pow = 0, e_rint = 0, e_floor = 0;
    for (int i = 0; i <= 2000000; ++i) {
        float x = -87.0f + 174.0f * (float)i / 2000000.0f;
        e_exp = fmax(e_exp, rel(kiln_expf(x), exp((double)x)));
        float t = -10.0f + 20.0f * (float)i / 2000000.0f;
        e_tanh = fmax(e_tanh, fabs(kiln_tanhf(t) - tanh((double)t)));
        e_erf = fmax(e_erf, fabs(kiln_erff(t) - erf((double)t)));
        e_rint = fmax(e_rint, fabs(kiln_rintf(t * 100.0f) - rint((double)(t * 100.0f))));
        e_floor = fmax(e_floor, fabs(kiln_floorf(t * 100.0f) - floor((double)(t * 100.0f))) + fabs(kiln_ceilf(t * 100.0f) - ceil((double)(t * 100.0f))));
        float p = ldexpf(1.0f + (float)(i % 1000) / 1000.0f, (i / 1000) % 200 - 100);
        e_log = fmax(e_log, fabs(kiln_logf(p) - log((double)p)) / fmax(1.0, fabs(log((double)p))));
        e_sqrt = fmax(e_sqrt, rel(kiln_sqrtf(p), sqrt((double)p)));
        float b = 0.01f + 10.0f * (float)(i % 1000) / 1000.0f, y = -4.0f + 8.0f * (float)(i / 1000) / 2000.0f;
        e_pow = fmax(e_pow, rel(kiln_powf(b, y), pow((double)b, (double)y)));
    }
    printf("exp %.3g log %.3g sqrt %.3g tanh %.3g erf %.3g pow %.3g rint %.3g floorceil %.3g\n", e_exp, e_log, e_sqrt, e_tanh, e_erf, e_pow, e_rint, e_floor);
    /* The bounds documented in kiln_runtime.h. */
    return (e_exp <= 3e-7 && e_log <= 3e-7 && e_sqrt <= 1.2e-7 && e_tanh <= 3e-7 && e_erf <= 6e-7 && e_pow <= 2e-6 &&
            e_rint == 0 && e_floor == 0) ? 0 : 1;
}

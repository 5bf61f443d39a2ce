/* A QEMU TCG plugin that counts executed guest instructions, deterministically.
 *
 * Debian's QEMU ships neither plugins nor qemu-plugin.h, so this file declares the few plugin
 * API functions it uses itself. They exist, with these signatures, from QEMU 7.2 to 10.x.
 * The plugin API version the plugin claims must lie in QEMU's supported range: 7.2 accepts
 * only 1, 10.x only 2 and later. A constructor picks the version from whether a v2-only
 * function resolves (a weak reference into the QEMU executable).
 *
 * Counting: every executed translation block adds its instruction count. With begin=ADDR and
 * end=ADDR (the harness's kiln_count_begin and kiln_count_end), the reported figure is the
 * count between the two markers; without them, the whole run. The result is written, as
 * "insns: N", to out=FILE (or stderr) when the guest exits. With mark=ADDR (a profiling build's
 * kiln_layer_mark, called before the first layer and after each), it also writes
 * "marks: C1 C2 ...": the count since the begin marker at each call between the two markers.
 *
 * Build: cc -O2 -shared -fPIC -fvisibility=hidden insncount.c -o insncount.so
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
struct qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);

void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn,
                                            qemu_plugin_vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
/* Only in API v2 and later (QEMU 9.0+). */
uint64_t qemu_plugin_u64_sum(void *entry) __attribute__((weak));

EXPORT int qemu_plugin_version = 1;

__attribute__((constructor)) static void pick_api_version(void) {
    if (qemu_plugin_u64_sum != NULL) {
        qemu_plugin_version = 2;
    }
}

/* The boards have one vCPU, so plain counters suffice. */
static uint64_t executed;
static uint64_t at_begin;
static uint64_t at_end;
static int seen_begin;
static int seen_end;
static uint64_t begin_addr = UINT64_MAX;
static uint64_t end_addr = UINT64_MAX;
static uint64_t mark_addr = UINT64_MAX;
static uint64_t *marks;
static size_t n_marks;
static size_t cap_marks;
static int marks_lost;
static char out_path[4096];

static void on_tb_exec(unsigned int vcpu, void *n_insns) {
    (void)vcpu;
    executed += (uint64_t)(uintptr_t)n_insns;
}

static void on_begin(unsigned int vcpu, void *unused) {
    (void)vcpu;
    (void)unused;
    at_begin = executed;
    seen_begin = 1;
}

static void on_end(unsigned int vcpu, void *unused) {
    (void)vcpu;
    (void)unused;
    at_end = executed;
    seen_end = 1;
}

static void on_mark(unsigned int vcpu, void *unused) {
    (void)vcpu;
    (void)unused;
    if (!seen_begin || seen_end) {
        return;
    }
    if (n_marks == cap_marks) {
        size_t cap = cap_marks ? 2 * cap_marks : 256;
        uint64_t *grown = realloc(marks, cap * sizeof *grown);
        if (grown == NULL) {
            marks_lost = 1;
            return;
        }
        marks = grown;
        cap_marks = cap;
    }
    marks[n_marks++] = executed;
}

static void on_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_tb_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint64_t addr = qemu_plugin_insn_vaddr(insn);
        if (addr == begin_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_begin, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (addr == end_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_end, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
        if (addr == mark_addr) {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
        }
    }
}

static void report_count(qemu_plugin_id_t id, void *unused) {
    (void)id;
    (void)unused;
    FILE *f = out_path[0] ? fopen(out_path, "w") : stderr;
    if (f == NULL) {
        return;
    }
    if (begin_addr != UINT64_MAX || end_addr != UINT64_MAX) {
        if (seen_begin && seen_end && at_end >= at_begin) {
            fprintf(f, "insns: %" PRIu64 "\n", at_end - at_begin);
        } else {
            fprintf(f, "insns: markers not reached\n");
        }
    } else {
        fprintf(f, "insns: %" PRIu64 "\n", executed);
    }
    fprintf(f, "total: %" PRIu64 "\n", executed);
    if (mark_addr != UINT64_MAX && !marks_lost) {
        fprintf(f, "marks:");
        for (size_t i = 0; i < n_marks; i++) {
            fprintf(f, " %" PRIu64, marks[i] - at_begin);
        }
        fprintf(f, "\n");
    }
    if (f != stderr) {
        fclose(f);
    }
}

EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const struct qemu_info_t *info, int argc,
                               char **argv) {
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "out=", 4) == 0) {
            snprintf(out_path, sizeof out_path, "%s", arg + 4);
        } else if (strncmp(arg, "begin=", 6) == 0) {
            begin_addr = strtoull(arg + 6, NULL, 0);
        } else if (strncmp(arg, "end=", 4) == 0) {
            end_addr = strtoull(arg + 4, NULL, 0);
        } else if (strncmp(arg, "mark=", 5) == 0) {
            mark_addr = strtoull(arg + 5, NULL, 0);
        } else {
            fprintf(stderr, "insncount: unknown argument '%s'\n", arg);
            return -1;
        }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb_trans);
    qemu_plugin_register_atexit_cb(id, report_count, NULL);
    return 0;
}

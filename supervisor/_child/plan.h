/* Filling a plan from Python (plan.c), for spawn.c only: PID 1 never sees
 * this header's Python side. */
#ifndef SV_PLAN_H
#define SV_PLAN_H

#include "sv.h"

/* The plan's memory: every block it points to, freed as one (plan.c). */
struct sv_arena {
    void *blocks[256];
    size_t n;
    char *next; /* the free rest of the current chunk */
    size_t left;
};

void arena_free(struct sv_arena *a);
/* Fill `p` from SpawnConfig `cfg` and the spawn's descriptors; 0, or -1 with
 * a Python exception set (the arena may hold blocks either way). */
int plan_fill(struct sv_plan *p, struct sv_arena *a, PyObject *cfg, const int *fds, size_t nfds);

#endif

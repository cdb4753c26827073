/* A minimal parallel-for on pthreads: one call spawns nthreads-1 workers and joins them. */
#include "engine.h"

#if defined(_WIN32)
void hyb_parallel_for(int nthreads, size_t ntasks, hyb_range_fn fn, void *ctx) {
    (void)nthreads;
    if (ntasks) fn(ctx, 0, ntasks);
}
#else
#include <pthread.h>

typedef struct {
    hyb_range_fn fn;
    void *ctx;
    size_t lo, hi;
} hyb_job;

static void *hyb_worker(void *arg) {
    hyb_job *job = (hyb_job *)arg;
    job->fn(job->ctx, job->lo, job->hi);
    return NULL;
}

#define HYB_MAX_THREADS 256

void hyb_parallel_for(int nthreads, size_t ntasks, hyb_range_fn fn, void *ctx) {
    if (ntasks == 0) return;
    if (nthreads > HYB_MAX_THREADS) nthreads = HYB_MAX_THREADS;
    if (nthreads <= 1 || ntasks == 1) {
        fn(ctx, 0, ntasks);
        return;
    }
    if ((size_t)nthreads > ntasks) nthreads = (int)ntasks;
    hyb_job jobs[HYB_MAX_THREADS];
    pthread_t tids[HYB_MAX_THREADS];
    int started[HYB_MAX_THREADS];
    for (int t = 0; t < nthreads; t++) {
        jobs[t].fn = fn;
        jobs[t].ctx = ctx;
        jobs[t].lo = ntasks * (size_t)t / (size_t)nthreads;
        jobs[t].hi = ntasks * (size_t)(t + 1) / (size_t)nthreads;
        started[t] = 0;
    }
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&tids[t], NULL, hyb_worker, &jobs[t]) == 0;
    fn(ctx, jobs[0].lo, jobs[0].hi);
    for (int t = 1; t < nthreads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else /* could not start a thread: do its share here */
            fn(ctx, jobs[t].lo, jobs[t].hi);
    }
}
#endif

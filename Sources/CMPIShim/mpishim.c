// See include/mpishim.h.
#include "mpishim.h"
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int rd_mpi_init(int *provided) {
    // Errors come back as codes instead of aborting the job, so Swift can report them.
    int level = MPI_THREAD_SINGLE;
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &level);
    if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    // The standard orders the levels but leaves their values to the library.
    *provided = level >= MPI_THREAD_MULTIPLE ? 3 : level >= MPI_THREAD_SERIALIZED ? 2 : level >= MPI_THREAD_FUNNELED ? 1 : 0;
    return rc;
}

int rd_mpi_finalize(void) { return MPI_Finalize(); }
int rd_mpi_rank(int *rank) { return MPI_Comm_rank(MPI_COMM_WORLD, rank); }
int rd_mpi_size(int *size) { return MPI_Comm_size(MPI_COMM_WORLD, size); }

int rd_mpi_node(int *local_rank, int *local_size) {
    MPI_Comm node;
    int rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    if (rc != MPI_SUCCESS) return rc;
    rc = MPI_Comm_rank(node, local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(node, local_size);
    MPI_Comm_free(&node);
    return rc;
}

// MPI counts are int: large buffers go in pieces of at most 2^30 elements.
#define RD_CHUNK ((size_t)1 << 30)

int rd_mpi_allreduce_sum_f32(float *data, size_t count) {
    for (size_t off = 0; off < count; off += RD_CHUNK) {
        size_t n = count - off < RD_CHUNK ? count - off : RD_CHUNK;
        int rc = MPI_Allreduce(MPI_IN_PLACE, data + off, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

int rd_mpi_allreduce_sum_f64(double *data, size_t count) {
    return MPI_Allreduce(MPI_IN_PLACE, data, (int)count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

int rd_mpi_iallreduce_sum_f32(float *data, size_t count, int64_t *request) {
    if (count > RD_CHUNK) return MPI_ERR_COUNT;
    MPI_Request *r = (MPI_Request *)malloc(sizeof(MPI_Request));
    if (!r) return MPI_ERR_NO_MEM;
    int rc = MPI_Iallreduce(MPI_IN_PLACE, data, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, r);
    if (rc != MPI_SUCCESS) { free(r); return rc; }
    *request = (int64_t)(intptr_t)r;
    return MPI_SUCCESS;
}

int rd_mpi_test(int64_t *request, int *done) {
    MPI_Request *r = (MPI_Request *)(intptr_t)*request;
    int rc = MPI_Test(r, done, MPI_STATUS_IGNORE);
    if (rc == MPI_SUCCESS && *done) { free(r); *request = 0; }
    return rc;
}

int rd_mpi_wait(int64_t *request) {
    MPI_Request *r = (MPI_Request *)(intptr_t)*request;
    int rc = MPI_Wait(r, MPI_STATUS_IGNORE);
    free(r); *request = 0;
    return rc;
}

// 16-bit gradients on the wire (bfloat16 or IEEE float16), summed in float: every pairwise
// combine widens both operands to float, adds, and rounds back to nearest even.
static inline float bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t f32_to_bf16(float f) {
    uint32_t u; memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);     // NaN stays NaN
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline float f16_to_f32(uint16_t h) { _Float16 v; memcpy(&v, &h, 2); return (float)v; }
static inline uint16_t f32_to_f16(float f) { _Float16 v = (_Float16)f; uint16_t h; memcpy(&h, &v, 2); return h; }

static void sum_bf16(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in; uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}
static void sum_f16(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in; uint16_t *b = inout;
    for (int i = 0; i < *len; i++) b[i] = f32_to_f16(f16_to_f32(a[i]) + f16_to_f32(b[i]));
}
static MPI_Op op16[3] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
static int half_op(int kind, MPI_Op *op) {
    if (kind != 1 && kind != 2) return MPI_ERR_ARG;
    if (op16[kind] == MPI_OP_NULL) {
        int rc = MPI_Op_create(kind == 1 ? sum_bf16 : sum_f16, 1, &op16[kind]);
        if (rc != MPI_SUCCESS) return rc;
    }
    *op = op16[kind];
    return MPI_SUCCESS;
}

void rd_to_half(const float *src, uint16_t *dst, size_t n, int kind) {
    if (kind == 1) for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
    else for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}
void rd_from_half(const uint16_t *src, float *dst, size_t n, int kind, float scale) {
    if (kind == 1) for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]) * scale;
    else for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]) * scale;
}

int rd_mpi_allreduce_sum_half(uint16_t *data, size_t count, int kind) {
    MPI_Op op; int rc = half_op(kind, &op);
    if (rc != MPI_SUCCESS) return rc;
    for (size_t off = 0; off < count; off += RD_CHUNK) {
        size_t n = count - off < RD_CHUNK ? count - off : RD_CHUNK;
        rc = MPI_Allreduce(MPI_IN_PLACE, data + off, (int)n, MPI_UINT16_T, op, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

int rd_mpi_iallreduce_sum_half(uint16_t *data, size_t count, int kind, int64_t *request) {
    if (count > RD_CHUNK) return MPI_ERR_COUNT;
    MPI_Op op; int rc = half_op(kind, &op);
    if (rc != MPI_SUCCESS) return rc;
    MPI_Request *r = (MPI_Request *)malloc(sizeof(MPI_Request));
    if (!r) return MPI_ERR_NO_MEM;
    rc = MPI_Iallreduce(MPI_IN_PLACE, data, (int)count, MPI_UINT16_T, op, MPI_COMM_WORLD, r);
    if (rc != MPI_SUCCESS) { free(r); return rc; }
    *request = (int64_t)(intptr_t)r;
    return MPI_SUCCESS;
}

int rd_mpi_bcast(void *data, size_t bytes, int root) {
    char *p = (char *)data;
    for (size_t off = 0; off < bytes; off += RD_CHUNK) {
        size_t n = bytes - off < RD_CHUNK ? bytes - off : RD_CHUNK;
        int rc = MPI_Bcast(p + off, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return rc;
    }
    return MPI_SUCCESS;
}

int rd_mpi_allgather(const void *data, size_t bytes, void *out) {
    if (bytes > INT_MAX) return MPI_ERR_COUNT;
    return MPI_Allgather(data, (int)bytes, MPI_BYTE, out, (int)bytes, MPI_BYTE, MPI_COMM_WORLD);
}

int rd_mpi_gather_f32(const float *data, size_t count, float *out, int root) {
    if (count > INT_MAX) return MPI_ERR_COUNT;
    return MPI_Gather(data, (int)count, MPI_FLOAT, out, (int)count, MPI_FLOAT, root, MPI_COMM_WORLD);
}

int rd_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }

// Heartbeats on a communicator of their own, so they never match the training's messages.
// Every rank answers pings (rd_mpi_heartbeat_serve, called now and then by its watchdog
// thread); a rank pings all others while it waits on them, and on a stall, and names those that do not answer.
#define RD_PING 7101
#define RD_PONG 7102
static MPI_Comm hb_comm = MPI_COMM_NULL;

int rd_mpi_heartbeat_init(void) {
    int rc = MPI_Comm_dup(MPI_COMM_WORLD, &hb_comm);
    if (rc == MPI_SUCCESS) MPI_Comm_set_errhandler(hb_comm, MPI_ERRORS_RETURN);
    return rc;
}

int rd_mpi_heartbeat_serve(void) {
    if (hb_comm == MPI_COMM_NULL) return MPI_SUCCESS;
    for (;;) {
        int flag = 0, token = 0;
        MPI_Status st;
        int rc = MPI_Iprobe(MPI_ANY_SOURCE, RD_PING, hb_comm, &flag, &st);
        if (rc != MPI_SUCCESS || !flag) return rc;
        rc = MPI_Recv(&token, 1, MPI_INT, st.MPI_SOURCE, RD_PING, hb_comm, MPI_STATUS_IGNORE);
        if (rc == MPI_SUCCESS) rc = MPI_Send(&token, 1, MPI_INT, st.MPI_SOURCE, RD_PONG, hb_comm);
        if (rc != MPI_SUCCESS) return rc;
    }
}

int rd_mpi_heartbeat_probe(double seconds, int *answered) {
    if (hb_comm == MPI_COMM_NULL) return MPI_ERR_COMM;
    int size = 0, rank = 0;
    MPI_Comm_size(hb_comm, &size);
    MPI_Comm_rank(hb_comm, &rank);
    MPI_Request *sends = calloc((size_t)size, sizeof(MPI_Request));
    MPI_Request *recvs = calloc((size_t)size, sizeof(MPI_Request));
    int *tokens = calloc((size_t)size * 2, sizeof(int));
    if (!sends || !recvs || !tokens) { free(sends); free(recvs); free(tokens); return MPI_ERR_NO_MEM; }
    for (int r = 0; r < size; r++) {
        answered[r] = r == rank;
        sends[r] = recvs[r] = MPI_REQUEST_NULL;
        if (r == rank) continue;
        tokens[2 * r] = rank;
        MPI_Irecv(&tokens[2 * r + 1], 1, MPI_INT, r, RD_PONG, hb_comm, &recvs[r]);
        MPI_Isend(&tokens[2 * r], 1, MPI_INT, r, RD_PING, hb_comm, &sends[r]);
    }
    double end = MPI_Wtime() + seconds;
    int waiting = size - 1;
    while (waiting > 0 && MPI_Wtime() < end) {
        rd_mpi_heartbeat_serve();      // others may be probing us at the same moment
        for (int r = 0; r < size; r++) {
            if (r == rank || answered[r]) continue;
            int done = 0;
            if (MPI_Test(&recvs[r], &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && done) { answered[r] = 1; waiting--; }
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    if (waiting == 0) {
        // Every rank answered: the pings have been received, so the sends are done. The watchdog
        // pings now and then for a whole run, so nothing may pile up.
        MPI_Waitall(size, sends, MPI_STATUSES_IGNORE);
        free(sends); free(recvs); free(tokens);
    }
    // Otherwise requests to ranks that did not answer are left pending, and their buffers stay
    // allocated: a late answer lands there (the job usually ends soon; a few bytes if not).
    return MPI_SUCCESS;
}
int rd_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }

void rd_mpi_error_string(int code, char *buf, size_t len) {
    char tmp[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, tmp, &n) != MPI_SUCCESS) snprintf(tmp, sizeof tmp, "MPI error %d", code);
    if (len) { strncpy(buf, tmp, len - 1); buf[len - 1] = 0; }
}

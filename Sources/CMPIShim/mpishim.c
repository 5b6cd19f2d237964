// See include/mpishim.h.
#include "mpishim.h"
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
int rd_mpi_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }

void rd_mpi_error_string(int code, char *buf, size_t len) {
    char tmp[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(code, tmp, &n) != MPI_SUCCESS) snprintf(tmp, sizeof tmp, "MPI error %d", code);
    if (len) { strncpy(buf, tmp, len - 1); buf[len - 1] = 0; }
}

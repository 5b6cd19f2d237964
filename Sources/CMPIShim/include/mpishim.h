// CMPIShim: the only code that touches mpi.h. MPI_COMM_WORLD, MPI_FLOAT,
// MPI_SUM, MPI_IN_PLACE and the like are macros Swift cannot import; these
// plain functions wrap them. Every function returns an MPI error code
// (0 = MPI_SUCCESS) unless it says otherwise; rd_mpi_error_string explains one.
#ifndef REID_MPISHIM_H
#define REID_MPISHIM_H
#include <stddef.h>
#include <stdint.h>

/// Initialises MPI asking for MPI_THREAD_MULTIPLE (communication thread);
/// *provided receives the level granted: 0 single, 1 funneled, 2 serialized, 3 multiple.
int rd_mpi_init(int *provided);
int rd_mpi_finalize(void);
int rd_mpi_rank(int *rank);
int rd_mpi_size(int *size);
/// Rank among the processes of this node and their number (MPI_COMM_TYPE_SHARED split).
int rd_mpi_node(int *local_rank, int *local_size);
/// In-place sum of floats over all ranks.
int rd_mpi_allreduce_sum_f32(float *data, size_t count);
int rd_mpi_allreduce_sum_f64(double *data, size_t count);
/// Non-blocking in-place sum; *request receives a handle for test/wait.
int rd_mpi_iallreduce_sum_f32(float *data, size_t count, int64_t *request);
/// *done = 1 when the request completed (the handle is then released).
int rd_mpi_test(int64_t *request, int *done);
int rd_mpi_wait(int64_t *request);
/// 16-bit gradient exchange (kind 1: bfloat16, 2: IEEE float16): conversions from and to
/// float (round to nearest even; `scale` multiplies on the way back) and in-place sums
/// whose pairwise combines are done in float.
void rd_to_half(const float *src, uint16_t *dst, size_t n, int kind);
void rd_from_half(const uint16_t *src, float *dst, size_t n, int kind, float scale);
int rd_mpi_allreduce_sum_half(uint16_t *data, size_t count, int kind);
int rd_mpi_iallreduce_sum_half(uint16_t *data, size_t count, int kind, int64_t *request);
int rd_mpi_bcast(void *data, size_t bytes, int root);
/// Every rank's `bytes` bytes, concatenated in rank order into `out` (size*bytes).
int rd_mpi_allgather(const void *data, size_t bytes, void *out);
/// Every rank's `count` floats, in rank order, into `out` (size*count) at `root` only.
int rd_mpi_gather_f32(const float *data, size_t count, float *out, int root);
int rd_mpi_barrier(void);
/// Heartbeats (a communicator of their own, made by rd_mpi_heartbeat_init, collectively):
/// serve answers pending pings; probe pings every other rank and waits up to `seconds`,
/// setting answered[r] to 1 for each rank that replied (and for itself).
int rd_mpi_heartbeat_init(void);
int rd_mpi_heartbeat_serve(void);
int rd_mpi_heartbeat_probe(double seconds, int *answered);
/// Ends every rank of the job with `code` (does not return on success).
int rd_mpi_abort(int code);
/// The text of an MPI error code into buf (always NUL-terminated).
void rd_mpi_error_string(int code, char *buf, size_t len);
#endif

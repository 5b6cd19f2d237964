// CBLAS: OpenBLAS's C interface (cblas.h) and its thread controls.
// pkg-config `openblas` puts the Debian multiarch include directory on the path.
#ifndef REID_CBLAS_SHIM_H
#define REID_CBLAS_SHIM_H
#include <cblas.h>
#endif

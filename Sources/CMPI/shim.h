// CMPI: Open MPI's headers and library, found through pkg-config `ompi`.
// Only CMPIShim includes this; Swift code uses CMPIShim's functions.
#ifndef REID_CMPI_H
#define REID_CMPI_H
#include <mpi.h>
#endif

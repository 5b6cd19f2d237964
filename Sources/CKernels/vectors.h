// The GCC/Clang vector types the kernels compute with, each path picking its width; unaligned
// (they may sit at any float address), and the token pasting that names each path's functions.
#ifndef REID_VECTORS_H
#define REID_VECTORS_H

typedef float v2 __attribute__((vector_size(8), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef double d2 __attribute__((vector_size(16), aligned(8)));
typedef double d4 __attribute__((vector_size(32), aligned(8)));
typedef double d8 __attribute__((vector_size(64), aligned(8)));

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#endif

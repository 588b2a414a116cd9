/* rt_npy.h — writes a float32 array as a NumPy .npy file (format 1.0). */
#ifndef RT_NPY_H
#define RT_NPY_H

#include <stddef.h>
#include <stdint.h>

/* data: an array of dims[0] x ... x dims[rank - 1] floats, C order, rank 1
 * to 4.  0, or -1 with the reason (naming path) in err. */
int rt_npy_write_f32(const char *path, const float *data, int rank, const int64_t *dims, char *err,
                     size_t errlen);

#endif

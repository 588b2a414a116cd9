/* rt_npy.h — writes a float32 array as a NumPy .npy file (format 1.0). */
#ifndef RT_NPY_H
#define RT_NPY_H

#include <stddef.h>
#include <stdint.h>

int rt_npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols,
                     char *err, size_t errlen);
/* The same for rank dims (1..4), C order. */
int rt_npy_write_f32_nd(const char *path, const float *data, int rank, const int64_t *dims,
                        char *err, size_t errlen);

#endif

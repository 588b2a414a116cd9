/* rt_npy.c — .npy 1.0: magic, version, little-endian u16 header length,
 * a Python dict literal padded with spaces to a 64-byte boundary ending in
 * '\n', then the raw little-endian data in C order. */
#include "rt_npy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int rt_npy_write_f32(const char *path, const float *data, int rank, const int64_t *dims, char *err,
                     size_t errlen) {
  if (rank < 1 || rank > 4) {
    snprintf(err, errlen, "%s: cannot write a rank-%d array (1 to 4 dimensions)", path, rank);
    return -1;
  }
  char shape[96] = "";
  size_t cells = 1;
  for (int i = 0, len = 0; i < rank; i++) {
    len += snprintf(shape + len, sizeof shape - (size_t)len, rank == 1 ? "%lld," : i ? ", %lld" : "%lld",
                    (long long)dims[i]);
    cells *= (size_t)dims[i];
  }
  char hdr[192];
  int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", shape);
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  memset(hdr + n, ' ', (size_t)pad);
  hdr[n + pad] = '\n';
  uint16_t hlen = (uint16_t)(n + pad + 1);
  FILE *f = fopen(path, "wb");
  if (!f) {
    snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    return -1;
  }
  uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)(hlen & 0xff), (uint8_t)(hlen >> 8)};
  int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, hlen, f) == hlen &&
           fwrite(data, sizeof(float), cells, f) == cells;
  if (fclose(f) || !ok) {
    snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
    return -1;
  }
  return 0;
}

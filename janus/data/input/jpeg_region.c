/* Decodes only a crop of a JPEG: libjpeg-turbo skips the rows above and below it (entropy
 * decoding only) and crops the columns to it (no IDCT, upsampling or colour conversion outside).
 * janus.data.input.jpeg_region builds this file with the system's C compiler and
 * libjpeg(-turbo) headers on first use and calls it through ctypes (which releases the GIL).
 *
 * The pixels equal the whole decode's, cropped: the decoded columns reach MARGIN pixels past each
 * side of the crop, so fancy upsampling sees the same neighbouring chroma samples as it does in
 * the whole image (tests/test_jpeg_region.py checks it bitwise).
 *
 * Every libjpeg error and warning in the data read returns -1 with libjpeg's message; the caller
 * then decodes the whole image as before, which decides what the input is worth. With
 * `read_to_end`, that is the whole file (the rows below the crop entropy-decoded only), so a broken
 * file gets the whole decode's verdict; without, decoding stops after the crop's last row, as
 * tf.io.decode_and_crop_jpeg does: for files known to decode whole (checked when the records were
 * built), whose rows above any later damage decode the same either way.
 */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#define MARGIN 4

struct error_manager {
  struct jpeg_error_mgr pub;
  jmp_buf escape;
  char message[JMSG_LENGTH_MAX];
};

static void on_error(j_common_ptr cinfo) {
  struct error_manager *err = (struct error_manager *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, err->message);
  longjmp(err->escape, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
  if (level < 0) on_error(cinfo); /* a warning means corrupt data: refuse, as strict decoders do */
}

/* The crop [x, x + w) x [y, y + h) of the JPEG `data` as RGB into `out` (h * w * 3 bytes).
 * Returns 0, or -1 with a message in `message` (at most `message_len` bytes). */
int janus_jpeg_region(const unsigned char *data, unsigned long size, int x, int y, int w, int h,
                      int read_to_end, unsigned char *out, char *message, int message_len) {
  struct jpeg_decompress_struct cinfo;
  struct error_manager err;
  unsigned char *volatile row = NULL;

  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  if (setjmp(err.escape)) {
    snprintf(message, message_len, "%s", err.message);
    jpeg_destroy_decompress(&cinfo);
    free(row);
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, size);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  if (x < 0 || y < 0 || w < 1 || h < 1 || x + w > (int)cinfo.output_width ||
      y + h > (int)cinfo.output_height) {
    snprintf(message, message_len, "crop %dx%d at (%d, %d) is outside the %ux%u image", w, h, x,
             y, cinfo.output_width, cinfo.output_height);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  int left = x > MARGIN ? x - MARGIN : 0;
  int right = x + w + MARGIN < (int)cinfo.output_width ? x + w + MARGIN : (int)cinfo.output_width;
  JDIMENSION offset = left, width = right - left;
  if (width < cinfo.output_width) jpeg_crop_scanline(&cinfo, &offset, &width); /* widens to iMCUs */
  if (y > 0) jpeg_skip_scanlines(&cinfo, y);
  row = malloc((size_t)cinfo.output_width * 3);
  if (row == NULL) {
    snprintf(message, message_len, "out of memory for a %u-pixel row", cinfo.output_width);
    jpeg_destroy_decompress(&cinfo);
    return -1;
  }
  JSAMPROW rows[1] = {row};
  for (int r = 0; r < h; r++) {
    jpeg_read_scanlines(&cinfo, rows, 1);
    memcpy(out + (size_t)r * w * 3, row + (size_t)(x - (int)offset) * 3, (size_t)w * 3);
  }
  if (read_to_end) {
    /* The rows below are entropy-decoded only, but to the end of the data, so that libjpeg reports
       any corruption there as the whole decode would (the caller then falls back to it, and it
       decides). Skipping the very last row would skip the data unread: that row is decoded. */
    if (cinfo.output_scanline < cinfo.output_height) {
      jpeg_skip_scanlines(&cinfo, cinfo.output_height - cinfo.output_scanline - 1);
      jpeg_read_scanlines(&cinfo, rows, 1);
    }
    jpeg_finish_decompress(&cinfo); /* reads to the end-of-image marker */
  }
  jpeg_destroy_decompress(&cinfo);
  free(row);
  return 0;
}

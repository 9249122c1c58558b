/* Clocks. Wall time (unix ms) is what the leader stamps on commands; monotonic
 * time measures intervals and deadlines. Neither is ever read by apply. */
#ifndef QR_CLOCK_H
#define QR_CLOCK_H

#include <stdint.h>

uint64_t qr_clock_wall_ms(void);
uint64_t qr_clock_mono_ms(void);

#endif /* QR_CLOCK_H */

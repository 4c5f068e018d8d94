"""Settings for the whole suite, made before any test module imports torch."""

import os

# Threads of OpenMP that wait for work sleep instead of spinning. On a machine shared with
# other work (CI runners often are), a spinning thread holds a core that the thread it waits
# for needs: the tiny networks of the tests, thousands of short parallel ops, ran four times
# slower beside two busy processes, against 1.6 times with passive waiting. A quiet machine
# sees no difference. The setting changes no result; the thread count stays the user's.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

/* The all-reduce that burnbert's ranks run once per optimizer step (train/src/distributed.rs:
 * one MPI_Allreduce, MPI_SUM, of every gradient as f32 in one flat buffer), timed alone for
 * the gradient sizes of all-MiniLM-L6-v2 and bert-base-uncased.
 *
 *   mpicc -O2 bench/allreduce.c -o /tmp/allreduce
 *   mpirun --allow-run-as-root -np 2 /tmp/allreduce
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    /* Parameters (+1 presence flag each, as burnbert sends): MiniLM-L6 with a 2-class head,
       bert-base with a 2-class head. */
    const char *names[] = {"all-MiniLM-L6-v2", "bert-base-uncased"};
    const long counts[] = {22713986L + 105, 109483778L + 201};
    for (int m = 0; m < 2; m++) {
        long n = counts[m];
        float *send = malloc(n * sizeof(float)), *recv = malloc(n * sizeof(float));
        for (long i = 0; i < n; i++) send[i] = (float)(i % 1000) * 1e-3f;
        MPI_Allreduce(send, recv, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD); /* warm-up */
        const int repeats = 5;
        double best = 1e30;
        for (int r = 0; r < repeats; r++) {
            MPI_Barrier(MPI_COMM_WORLD);
            double start = MPI_Wtime();
            MPI_Allreduce(send, recv, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            double took = MPI_Wtime() - start;
            if (took < best) best = took;
        }
        if (rank == 0)
            printf("%s: %ld floats (%.1f MB), %d ranks: best of %d all-reduces %.1f ms\n", names[m], n,
                   n * 4.0 / 1e6, world, repeats, best * 1e3);
        free(send);
        free(recv);
    }
    MPI_Finalize();
    return 0;
}

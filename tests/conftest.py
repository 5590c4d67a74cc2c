"""Shared fixtures: real files in temporary folders, the real Keras VGG16.

The model is built with random, seeded weights (``weights="none"``): the
tests never download anything. Each test session keeps featclust's cache in a
temporary folder, so nothing is written to the user's home.

Slow tests are marked here (``python -m pytest -m "not slow"`` runs the rest in about
a minute): every test that uses a fixture in ``SLOW_FIXTURES`` (the real Keras VGG16,
or a job or the CLI run end to end once per module), and every test in ``SLOW_TESTS``,
the tests measured over 2 s on 2 CPU cores (``python -m pytest --durations=0``): mostly
jobs and the CLI run end to end, which build the model themselves. A new test or fixture
of that kind belongs in these sets.
"""

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from featclust import samples

SLOW_TESTS = {
    "test_assign.py::test_foreign_image_is_an_outlier_and_is_cached",
    "test_assign.py::test_scan_k_on_real_images_suggests_the_two_groups",
    "test_assign.py::test_sort_writes_sizes_scores_and_agreement_with_truth",
    "test_bad_files.py::test_sort_skips_every_bad_file_and_sorts_every_good_one",
    "test_review_safety.py::test_cli_prints_its_url_and_ctrl_c_stops_it_cleanly",
    "test_bounded_memory.py::test_long_features_get_automatic_pca_and_stay_out_of_memory",
    "test_cli.py::test_demo_holds_every_sample",
    "test_cli_hardening.py::test_case12_sigint_at_any_moment_is_one_line_and_exit_130",
    "test_cli_hardening.py::test_case14_offline_without_weights_prints_only_featclusts_line_with_the_way_out",
    "test_cli.py::test_help_does_not_import_tensorflow",
    "test_cli.py::test_offline_imagenet_gives_clear_message_and_exit_3",
    "test_cli.py::test_rerun_into_own_output_keeps_foreign_files",
    "test_cli.py::test_sort_then_other_k_reuses_the_store",
    "test_cli.py::test_user_errors_are_one_line",
    "test_content_reuse.py::test_renamed_copy_embeds_nothing_but_a_changed_image",
    "test_content_reuse.py::test_similar_on_a_stored_folder_imports_no_tensorflow",
    "test_content_reuse.py::test_store_gc_forgets_deleted_folders",
    "test_content_reuse.py::test_sub_clustering_embeds_nothing_and_links_back",
    "test_crash.py::test_ctrl_c_then_sigkill_then_rerun_finishes_with_the_same_features",
    "test_crash.py::test_damaged_chunks_are_detected_reported_and_embedded_again",
    "test_crash.py::test_full_disk_while_copying_leaves_no_half_file",
    "test_crash.py::test_rerun_into_a_previous_output_replaces_only_featclusts_files",
    "test_crash.py::test_second_run_on_the_same_store_is_refused_while_the_first_holds_it",
    "test_decoding_processes.py::test_a_consumer_that_stops_early_does_not_hang",
    "test_decoding_processes.py::test_processes_give_the_same_batches_as_threads",
    "test_distributed.py::test_a_killed_worker_changes_nothing",
    "test_distributed.py::test_clear_errors",
    "test_distributed.py::test_cli_embed_local_cluster_and_no_tensorflow_in_the_driver",
    "test_distributed.py::test_embed_through_dask_equals_one_process",
    "test_distributed.py::test_missing_dask_says_how_to_install",
    "test_distributed.py::test_rows_are_labelled_as_dask_tasks_block_by_block",
    "test_distributed.py::test_sort_through_dask_gives_the_same_labels",
    "test_distributed.py::test_without_dask_nothing_imports_it",
    "test_embed_fast.py::test_device_and_decoding_do_not_import_keras",
    "test_embed_fast.py::test_iter_features_streams_batches_in_order",
    "test_embed_grid.py::test_assign_embeds_new_images_with_the_sorts_features",
    "test_embed_grid.py::test_dim_is_the_length_of_the_features",
    "test_embed_grid.py::test_sort_reuses_what_embed_stored",
    "test_embed_padding.py::test_two_images_with_batch_64_run_as_a_batch_of_two",
    "test_embed_runtime.py::test_a_fully_cached_embed_imports_no_tensorflow",
    "test_embed_runtime.py::test_a_sort_on_a_cpu_prints_only_featclusts_lines",
    "test_estimator_similar.py::test_progress_reaches_the_embedding",
    "test_estimators.py::test_feature_kmeans_passes_check_estimator",
    "test_fit_sample.py::test_check_estimator_with_a_sample",
    "test_fit_sample.py::test_kscan_on_a_sample",
    "test_fit_sample.py::test_label_block_and_small_pickles",
    "test_fit_sample.py::test_labeller_gets_a_small_model_and_sets_the_labels",
    "test_fit_sample.py::test_memory_flat_with_blockwise_pca_on_the_sample",
    "test_fit_sample.py::test_memory_stays_flat_in_rows_for_a_memory_mapped_matrix",
    "test_fit_sample.py::test_sample_of_all_rows_gives_todays_labels",
    "test_fit_sample.py::test_sampled_fit_agrees_with_full_fit",
    "test_fit_sample.py::test_scores_of_a_large_matrix_are_computed_block_by_block",
    "test_house.py::test_import_featclust_loads_no_heavy_optional_module",
    "test_images_memory.py::test_16bit_9000x9000_pngs_decode_within_the_stated_bound",
    "test_images_memory.py::test_decoding_an_extreme_strip_directly_stays_small",
    "test_images_memory.py::test_extreme_aspect_ratios_cost_memory_of_the_output",
    "test_images_scan.py::test_sort_lists_pipes_and_folder_links_in_bad_files_csv",
    "test_kscan.py::test_choose_k_for_sort_auto",
    "test_kscan.py::test_fast_path_pca_and_subsamples_keeps_the_answer",
    "test_kscan.py::test_save_kscan_writes_csv_and_png_and_never_overwrites_foreign_files",
    "test_kscan.py::test_scan_in_the_space_sort_clusters_in",
    "test_kscan.py::test_suggested_k_is_the_true_number_of_groups",
    "test_notebooks.py::test_notebook_runs",
    "test_notebooks.py::test_progress_bars_in_a_notebook_warn_nothing",
    "test_run_hardening.py::test_case_16_dask_local_workers_share_the_cpus_out",
    "test_output_hardening.py::test_edited_copy_is_never_overwritten_or_deleted",
    "test_output_hardening.py::test_edited_report_file_is_kept_with_a_warning",
    "test_output_hardening.py::test_odd_file_names_survive_every_csv",
    "test_output_hardening.py::test_strict_utf8_output_never_fails_on_a_name",
    "test_pipeline.py::test_changed_added_and_deleted_images",
    "test_pipeline.py::test_estimator_fit_predict",
    "test_pipeline.py::test_other_pooling_gets_its_own_store_entry",
    "test_pipeline.py::test_same_names_in_subfolders_both_arrive",
    "test_pipeline.py::test_second_run_with_other_k_embeds_nothing",
    "test_pipeline.py::test_two_shapes_land_in_two_clusters",
    "test_pipeline.py::test_weights_file_written_by_the_test",
    "test_quality.py::test_cli_tta_features_have_their_own_store_entry_and_ward_sorts_them",
    "test_quality.py::test_harness_features_are_the_ones_featclust_computes",
    "test_quality.py::test_small_run_prints_the_tables_and_keeps_every_score",
    "test_report.py::test_demo_writes_a_page_whose_every_reference_exists",
    "test_report.py::test_montages_hold_their_cluster_in_order_of_distance",
    "test_report.py::test_report_is_recreated_without_touching_foreign_files",
    "test_report_map.py::test_folder_of_few_distinct_images_gets_a_report_and_never_crashes",
    "test_report_map.py::test_tsne_map_is_the_default_up_to_100000_images_and_made_by_opentsne",
    "test_report_pages.py::test_a_sub_clustering_links_back_to_the_parent_report",
    "test_report_pages.py::test_identical_features_never_kill_the_process",
    "test_report_pages.py::test_too_few_distinct_images_get_the_pca_map_with_a_note",
    "test_samples.py::test_image_set_of_a_new_kind",
    "test_samples.py::test_marks_never_touch_the_border",
    "test_search.py::test_memory_mapped_features_are_read_block_by_block",
    "test_search_near_duplicates.py::test_default_threshold_finds_every_planted_copy_and_no_false_group",
    "test_store_content.py::test_sorted_copies_and_a_renamed_folder_embed_nothing_with_the_real_model",
    "test_store_content.py::test_store_works_without_fcntl",
    "test_user_experience.py::test_assign_place_can_link_instead_of_copy",
    "test_user_experience.py::test_assign_place_puts_new_images_into_the_sorted_folder",
    "test_user_experience.py::test_cli_writes_no_bar_frames_into_a_redirected_stderr",
    "test_user_experience.py::test_demo_says_where_the_sample_images_are",
    "test_user_experience.py::test_import_needs_no_fcntl",
    "test_user_experience.py::test_python_api_takes_a_progress_class_or_false",
    "test_user_experience.py::test_scan_k_takes_k_like_sort",
    "test_user_experience.py::test_written_files_get_the_umask_mode",
}


SLOW_FIXTURES = {
    "embedder",  # below
    "demo_out",  # test_report.py
    "features",  # test_embed_grid.py
    "fitted",  # test_estimator_similar.py
    "small_run",  # test_quality.py
    "sorted_grid",  # test_embed_grid.py
    "sorted_once",  # test_content_reuse.py
    "sorted_out",  # test_assign.py, test_output_hardening.py
    "sorted_work",  # test_cli_hardening.py
    "reviewed",  # test_review_browser.py
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        key = item.nodeid.split("[")[0].rpartition("/")[2]
        if key in SLOW_TESTS or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    keras_home = tmp_path_factory.mktemp("keras-home")
    old = {k: os.environ.get(k) for k in ("XDG_CACHE_HOME", "KERAS_HOME")}
    os.environ["XDG_CACHE_HOME"] = str(cache)
    os.environ["KERAS_HOME"] = str(keras_home)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def embedder():
    """One random-weights VGG16 for the whole session (built on first use)."""
    from featclust import Embedder

    return Embedder(weights="none", batch_size=8)


CONTRAST_FAMILIES = {"heavy": (60, 7), "light": (15, 2)}  # dot count, dot radius


def make_two_families(folder, n_per_family=8, families=("heavy", "light"), seed=0):
    """Write a folder of two clearly different dot patterns; return {path: family}.

    The default pair, many large dots ("heavy") against few small ones
    ("light"), is separated perfectly even by random-weight features, which
    is what the tests have: shape families from :mod:`featclust.samples` (ring,
    grid, ...) need pretrained weights to separate and are not used for
    assertions about cluster membership.
    """
    if not set(families) <= set(CONTRAST_FAMILIES):
        return samples.make_image_set(
            folder, n_per_family=n_per_family, families=families, seed=seed
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_per_family * len(families))
    truth = {}
    for j, idx in enumerate(order):
        family = families[idx % len(families)]
        name = f"img_{j:05d}.png"
        contrast_dots(family, rng).save(folder / name)
        truth[name] = family
    return truth


def contrast_dots(family, rng, size=200):
    """One image of the "heavy" or "light" family."""
    n, r = CONTRAST_FAMILIES[family]
    im = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(im)
    for x, y in rng.uniform(0.1 * size, 0.9 * size, (n, 2)):
        draw.ellipse([x - r, y - r, x + r, y + r], fill=0)
    return im


@pytest.fixture(scope="session")
def two_families(tmp_path_factory):
    """A folder of 8 "heavy" and 8 "light" images (treat as read-only), and its truth."""
    folder = tmp_path_factory.mktemp("two-families")
    return folder, make_two_families(folder)


def read_csv(path):
    """Rows of a CSV file as dicts."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


def stripes(path):
    """An image unlike the generated dots: thick black bars."""
    im = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(im)
    for y in range(5, 200, 22):
        draw.rectangle([0, y, 200, y + 7], fill=0)
    im.save(path)
    return path


def load_benchmark(name):
    """A script of ``benchmarks/`` as a module (its dataclasses look it up in sys.modules)."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*argv):
    """``featclust ARGV`` in-process: exit code, stdout, stderr."""
    import contextlib
    import io

    from featclust.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()

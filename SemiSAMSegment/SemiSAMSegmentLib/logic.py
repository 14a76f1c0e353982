"""The work of SemiSAMSegment's Logic: auto-segment, propagate, accept, the case they share, mask files.

:class:`CaseLogic` is a base class of ``SemiSAMSegmentLogic`` (kept here so the module file stays small).
It keeps, per input volume node, the case in progress (:class:`~SemiSAMSegmentLib.session.SegmentSession`:
start time, proposal, prompts, the core's propagation state) until :meth:`CaseLogic.accept`; and, shared by
all cases, the loaded models and the slice-embedding cache. The background slice encoding sets itself up
on its own thread (:meth:`CaseLogic.precomputeEmbeddings`), so the cases, the generalists and the cache are
guarded by locks. No qt, no ``slicer.app``: it runs inside Slicer and against the slicer-core wheel. Method
names follow Slicer's camelCase like the rest of the module's Logic.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from semisam.review import ReviewOrder
from SemiSAMLib.defaults import NEEDS_CHECKPOINT, Generalist

from . import accept as accept_lib
from . import autoseg, encoding, markup_prompts, mrml_io, review_table
from . import propagate as propagate_lib
from . import session as session_lib
from .texts import _

log = logging.getLogger(__name__)


class CaseLogic:
    """Sessions, models and the three engine actions (see the module docstring)."""

    def __init__(self) -> None:
        self._sessions = {}  # volume node ID -> SegmentSession
        self._generalists = {}  # (name, checkpoint, device) -> PromptableModel
        self._specialists = {}  # (folder, sha256, device) -> (model, manifest)
        self._embeddings = None  # semisam.generalists.cache.EmbeddingCache, made at first use
        # The cases and the cache (the background encoding sets itself up on its own thread), and one
        # generalist build at a time (a model asked for while another thread builds it is not built twice).
        self._lock = threading.RLock()
        self._buildLock = threading.Lock()

    @staticmethod
    def generalistProblem(generalist: Generalist, checkpoint: str):
        """Why ``generalist`` cannot be used with ``checkpoint`` (a message for the user), or ``None``."""
        if generalist not in NEEDS_CHECKPOINT:
            return None
        if not checkpoint:
            return _("{name} needs a checkpoint file: choose one (nothing is downloaded).").format(
                name=generalist.value
            )
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            return _("{name} checkpoint {path}: no such file.").format(name=generalist.value, path=path)
        if not os.access(path, os.R_OK):
            return _("{name} checkpoint {path}: not readable (permission denied).").format(
                name=generalist.value, path=path
            )
        return None

    @staticmethod
    def setSegmentOpacity(segmentationNode, opacity: float) -> None:
        """2D fill opacity of all segments, clipped to [0, 1]."""
        display = segmentationNode.GetDisplayNode()
        if display is None and segmentationNode.GetScene() is not None:
            segmentationNode.CreateDefaultDisplayNodes()
            display = segmentationNode.GetDisplayNode()
        if display is not None:
            display.SetOpacity2DFill(float(np.clip(opacity, 0.0, 1.0)))

    def importMaskFile(self, path, volumeNode, segmentationNode, segmentName: str = "lesion") -> list[str]:
        """Load a label map written by ``semisam`` (or any NIfTI/NRRD/MHA on the scan's grid) into segments.

        Label 1 goes into ``segmentName``; further labels into ``"<segmentName> 2"`` and so on. The file
        must lie on the volume's voxel grid (axis order/direction may differ, as Slicer reverses the slice
        axis of left-handed files).

        Raises:
            semisam.scan.volume.VolumeError: unreadable file, non-label values, or a different grid.
        """
        from semisam.scan.volume import read_mask

        reference = mrml_io.volume_from_node(volumeNode)
        mask_volume = read_mask(path)
        mask = mrml_io.array_on_grid(mask_volume, reference)
        labels = [int(v) for v in np.unique(mask) if v > 0]
        names = {v: segmentName if v == 1 else f"{segmentName} {v}" for v in labels}
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        return mrml_io.import_mask(mask, volumeNode, segmentationNode, names)

    @staticmethod
    def exportMaskFile(segmentationNode, volumeNode, path, segmentIds=None) -> Path:
        """Write segments as a label map on the volume's grid (atomically, by
        ``semisam.scan.volume.write_mask``).

        Label ``n`` is the ``n``-th of ``segmentIds`` (default: all segments in order).
        """
        from semisam.scan.volume import write_mask

        mask = mrml_io.export_mask(segmentationNode, volumeNode, segmentIds)
        return write_mask(mask, mrml_io.volume_from_node(volumeNode), path)

    @staticmethod
    def prepareOutputSegmentation(volumeNode, segmentationNode) -> None:
        """Put the segmentation on the volume's grid and give it display nodes."""
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()

    # ------------------------------------------------------------------ the case in progress
    def session(self, volumeNode):
        """The case in progress on ``volumeNode`` (a new one when none, or when its voxels changed)."""
        if volumeNode is None:
            raise ValueError("choose an input volume")
        with self._lock:
            current = self._sessions.get(volumeNode.GetID())
            if current is None or current.key != session_lib.volume_key(volumeNode):
                current = self._sessions[volumeNode.GetID()] = session_lib.SegmentSession.for_node(volumeNode)
            return current

    def clearSessions(self) -> None:
        """Forget every case in progress (the scene is closing: node IDs will be reused)."""
        with self._lock:
            self._sessions.clear()

    def endSession(self, volumeNode) -> None:
        """Forget the case in progress on ``volumeNode`` (done by :meth:`accept`)."""
        if volumeNode is not None:
            with self._lock:
                self._sessions.pop(volumeNode.GetID(), None)

    # ------------------------------------------------------------------ auto-segment
    @staticmethod
    def resolveModelFolder(storeFolder: str, modelFolder: str):
        """``(model folder, version label)``: the store's active version when there is one, else
        ``modelFolder``. Raises ``ModelChoiceError`` saying what to choose."""
        return autoseg.resolve_model_folder(storeFolder, modelFolder)

    def autoSegment(
        self, volumeNode, modelDir, segmentationNode, device="auto", progress=None, modelVersion=None
    ):
        """Run the specialist in ``modelDir`` on ``volumeNode``; one segment per label of the model.

        Segments are named after the manifest's labels and replaced in place when they exist. The
        per-slice uncertainty ranking goes into a table node and the segmentation node's
        ``SemiSAM.ReviewOrder`` attribute; the labels are kept as the case's proposal (for the proposal
        Dice at :meth:`accept`). The synchronous form of :meth:`prepareAutoSegment` -> ``computeAutoSegment``
        -> :meth:`applyAutoSegment` (what :meth:`startAutoSegment` runs with the middle step on a thread).

        Args:
            volumeNode: the scan (``vtkMRMLScalarVolumeNode``).
            modelDir: a specialist model folder (``manifest.json`` + ``weights.safetensors``).
            segmentationNode: receives the segments (put on the volume's grid).
            device: ``auto``, ``cpu``, ``cuda`` (or a ``Device``).
            progress: ``progress(fraction 0..1, stage)`` callback.
            modelVersion: how provenance names the model (default ``folder:<modelDir>``).

        Returns:
            :class:`SemiSAMSegmentLib.autoseg.AutoSegmentResult` (its ``review_order``: slices ``k``,
            most uncertain first).
        """
        request = self.prepareAutoSegment(volumeNode, modelDir, segmentationNode, device, modelVersion)
        return self.applyAutoSegment(self.computeAutoSegment(request, progress))

    def prepareAutoSegment(self, volumeNode, modelDir, segmentationNode, device="auto", modelVersion=None):
        """Main thread: read the scan from the scene; returns an ``AutoSegmentRequest``."""
        from semisam.device import resolve_device

        return autoseg.AutoSegmentRequest(
            session=self.session(volumeNode),
            model_dir=Path(modelDir),
            device=resolve_device(getattr(device, "value", device)),
            model_version=modelVersion or f"folder:{Path(modelDir).resolve()}",
            volume_node=volumeNode,
            segmentation_node=segmentationNode,
        )

    def computeAutoSegment(self, request, progress=None):
        """Any thread (no MRML): load (once) and run the specialist; fills ``request.result``."""
        request.result, request.manifest = autoseg.run_specialist(
            request.session.volume, request.model_dir, request.device, progress, self._specialists
        )
        return request

    def applyAutoSegment(self, request):
        """Main thread: write the computed labels and the review table; returns ``AutoSegmentResult``."""
        result, manifest, case = request.result, request.manifest, request.session
        volumeNode, segmentationNode = request.volume_node, request.segmentation_node
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        names = {int(value): name for name, value in manifest.labels.items()}
        ids = mrml_io.import_mask(result.labels, volumeNode, segmentationNode, names)
        order = ReviewOrder.from_specialist(result.review_order, result.slice_uncertainty)
        table = review_table.write_review_table(segmentationNode, order)
        case.proposal = result.labels
        case.proposal_version = request.model_version
        case.modality = manifest.modality
        case.review_order = [int(k) for k in result.review_order]
        return autoseg.AutoSegmentResult(
            segment_ids=ids,
            review_order=case.review_order,
            slice_uncertainty=result.slice_uncertainty,
            table_node=table,
            model_version=case.proposal_version,
            seconds={k: round(v, 3) for k, v in result.seconds.items()},
        )

    def startAutoSegment(self, volumeNode, storeFolder, modelFolder, segmentationNode, device="auto"):
        """Start an auto-segmentation on a worker thread; returns the started ``SemiSAMLib.worker.Worker``.

        The model is resolved now, from the store's *active* version each time (so a version promoted
        since the last run is used), else ``modelFolder``. Poll the worker; when it is done, call
        :meth:`applyAutoSegment` with ``worker.result`` on the main thread.
        """
        from SemiSAMLib.worker import Worker

        folder, version = self.resolveModelFolder(storeFolder, modelFolder)
        request = self.prepareAutoSegment(volumeNode, folder, segmentationNode, device, version)
        return Worker(_("Auto-segment"), lambda report: self.computeAutoSegment(request, report)).start()

    @staticmethod
    def reviewOrder(segmentationNode) -> list:
        """Slices ``k`` most uncertain first, as stored by :meth:`autoSegment` and re-ranked by each
        axial :meth:`propagate` across slices (empty when none; :mod:`semisam.review`)."""
        return review_table.review_order(segmentationNode)

    @staticmethod
    def nextUncertainSlice(segmentationNode, current=None):
        """The slice after ``current`` in the review order (the first when ``current`` is not in it;
        wraps around), or ``None`` when there is no ranking."""
        return ReviewOrder(review_table.review_order(segmentationNode)).next_after(current)

    @staticmethod
    def sliceCentreRAS(volumeNode, k: int):
        """RAS (mm) of the centre of slice ``k`` of ``volumeNode``."""
        return autoseg.slice_centre_ras(volumeNode, k)

    @staticmethod
    def showSlice(sliceNode, volumeNode, k: int):
        """Turn ``sliceNode`` to the plane of the volume's slices and centre it on slice ``k`` (works for
        sagittal, coronal and oblique acquisitions too); returns the slice centre (RAS mm)."""
        return autoseg.show_slice(sliceNode, volumeNode, k)

    # ------------------------------------------------------------------ propagate
    def generalistModel(self, generalist="litemedsam", checkpoint="", device="auto", version=None):
        """The generalist, built once per (name, checkpoint, device, adapted version): ``version`` is a
        generalist version folder (``semisam adapt``) whose decoder it answers with, or ``None``."""
        from semisam.adapt.versions import version_key
        from semisam.device import resolve_device
        from semisam.generalists import build_generalist

        name = getattr(generalist, "value", generalist)
        dev = resolve_device(getattr(device, "value", device))
        key = (name, str(checkpoint or ""), str(dev), version_key(version))
        with self._buildLock:  # a caller asking while the background encoding builds it waits for that one
            if key not in self._generalists:
                model = build_generalist(name, checkpoint=checkpoint or None, device=dev)
                if version is not None:
                    from semisam.adapt.versions import apply_version

                    apply_version(model, version)  # GeneralistVersionError (a ValueError) names the folder
                self._generalists[key] = model
            return self._generalists[key]

    @staticmethod
    def activeGeneralistVersion(storeFolder, generalist="litemedsam"):
        """The store's active version of ``generalist`` (``semisam adapt``), or ``None``: no store, none
        promoted for this generalist, or a store that cannot be read (the frozen generalist answers)."""
        if not storeFolder:
            return None
        from semisam.adapt.versions import active_version_path
        from semisam.store.errors import StoreError

        try:
            return active_version_path(
                Path(storeFolder).expanduser(), getattr(generalist, "value", generalist)
            )
        except (StoreError, OSError) as exc:
            log.warning("no adapted generalist from %s: %s", storeFolder, exc)
            return None

    def embeddingCache(self):
        """The slice-embedding cache all cases share (made at first use, on whichever thread)."""
        with self._lock:
            if self._embeddings is None:
                from semisam.generalists.cache import EmbeddingCache

                self._embeddings = EmbeddingCache(max_bytes=propagate_lib.EMBEDDING_CACHE_BYTES)
            return self._embeddings

    def _engine(self, generalist, checkpoint, intensityPreset, device, axis, version=None):
        """``(model, window argument, state key)`` for a propagation; raises when the generalist cannot run.
        ``version``: an adapted generalist version folder to answer with (its embeddings are the frozen
        generalist's, shared through the cache; its answers and so its propagation states are its own)."""
        name = getattr(generalist, "value", generalist)
        problem = self.generalistProblem(Generalist(name), checkpoint)
        if problem:
            raise ValueError(problem)
        from semisam.adapt.versions import version_key

        model = self.generalistModel(name, checkpoint, device, version)
        window = propagate_lib.window_argument(intensityPreset)
        key = (name, str(checkpoint or ""), window, axis, str(getattr(device, "value", device)))
        if version is not None:
            key += (version_key(version),)
        return model, window, key

    def precomputeEmbeddings(
        self,
        volumeNode,
        slices,
        generalist="litemedsam",
        checkpoint="",
        intensityPreset="auto",
        device="auto",
        axis="axial",
        views=None,
    ):
        """Start encoding ``slices`` (indices along ``axis``) in the background, e.g. the most uncertain
        slices after auto-segment, so that the first *Propagate* there answers without encoding; then the
        closer views in ``views`` (slice index -> ``semisam.generalists.view.View``, from
        :meth:`viewsAroundProposal`).

        On the calling (main) thread only cheap reads: the generalist's settings, the volume's identity and
        a view of its voxels. The thread of the returned job imports torch, builds the generalist (once),
        copies the voxels into the case when there is none yet and then encodes; a SAM 2-family generalist
        keeps no slice cache, so its job ends with nothing encoded. Use the same generalist, checkpoint,
        preset, device and axis as the propagation it prepares.

        Returns:
            A started :class:`SemiSAMSegmentLib.encoding.BackgroundEncoding` (``.done``, ``.indices``,
            ``.error``, ``.running()``, ``.wait()``, ``.cancel()``), whose ``error`` says what failed.

        Raises:
            ValueError: the generalist needs a checkpoint file it does not have.
            MrmlIOError: the volume node holds no image data.
        """
        name = getattr(generalist, "value", generalist)
        problem = self.generalistProblem(Generalist(name), checkpoint)
        if problem:
            raise ValueError(problem)
        snapshot = session_lib.VolumeSnapshot.of(volumeNode)

        def setup(cancelled):
            model, window, key = self._engine(name, checkpoint, intensityPreset, device, axis)
            if hasattr(model, "propagate_volume") or cancelled():
                return None
            cache = self.embeddingCache()
            with self._lock:
                case = self._sessions.get(snapshot.node_id)
            if case is not None and case.key == snapshot.key:
                return propagate_lib.encoder_for(case, model, key, axis, window, cache)
            case = snapshot.session()  # the voxel copy, here rather than on the main thread
            propagate_lib.new_state(case, model, key, axis, window, cache)
            with self._lock:  # the first Propagate on the volume then reuses this state and its encoder
                if not cancelled() and snapshot.node_id not in self._sessions:
                    self._sessions[snapshot.node_id] = case
            return case.state.encoder

        return encoding.BackgroundEncoding(setup, slices, views).start()

    def slicesAround(self, volumeNode, centres, radius: int) -> list:
        """Slice indices (axial, ``k``) within ``radius`` of any of ``centres``, nearest first, inside the
        volume: what a propagation from those slices visits first (reads the node's dimensions only)."""
        image = volumeNode.GetImageData() if volumeNode is not None else None
        n = image.GetDimensions()[2] if image is not None else 0
        wanted = {k + d for k in centres for d in range(-radius, radius + 1) if 0 <= k + d < n}
        return sorted(wanted, key=lambda s: (min(abs(s - c) for c in centres), s))

    def slicesAroundProposal(self, volumeNode, centres, limit: int) -> list:
        """After auto-segment: the slices the proposal covers and one on each side, nearest to ``centres``
        (e.g. the most uncertain slices) first, at most ``limit`` (the embedding cache holds ~384)."""
        case = self.session(volumeNode)
        if case.proposal is None:
            return self.slicesAround(volumeNode, list(centres), 2)[:limit]
        covered = np.flatnonzero(case.proposal.reshape(case.proposal.shape[0], -1).any(axis=1))
        wanted = {int(k) + d for k in covered for d in (-1, 0, 1)} | {int(k) for k in centres}
        wanted = {k for k in wanted if 0 <= k < case.volume.shape[0]}
        anchors = list(centres) or sorted(wanted)[:1]
        return sorted(wanted, key=lambda s: (min(abs(s - c) for c in anchors), s))[:limit] if anchors else []

    def viewsAroundProposal(self, volumeNode, slices) -> dict:
        """After auto-segment: the closer views a propagation will look through on ``slices`` (axial), around
        the proposal's mask on each (``semisam.generalists.view.views_along``); empty without a proposal."""
        from semisam.generalists.view import views_along

        case = self.session(volumeNode)
        return {} if case.proposal is None else views_along(case.proposal, slices)

    @staticmethod
    def sliceIndexAt(volumeNode, sliceNode=None):
        """The volume's slice ``k`` nearest the centre of ``sliceNode``'s view (the middle slice when there
        is no slice node), or ``None`` without image data."""
        image = volumeNode.GetImageData() if volumeNode is not None else None
        if image is None:
            return None
        nz = image.GetDimensions()[2]
        if sliceNode is None:
            return nz // 2
        m = sliceNode.GetSliceToRAS()
        ras = np.array([m.GetElement(r, 3) for r in range(3)] + [1.0])
        ijk = np.linalg.inv(mrml_io.ijk_to_ras(volumeNode)) @ ras
        return int(np.clip(round(float(ijk[2])), 0, nz - 1))

    @staticmethod
    def precomputeProblem(job):
        """Why the background encoding ``job`` (from :meth:`precomputeEmbeddings`) failed, as a message
        for the user, or ``None`` (no job, still running, finished or cancelled). Its failure costs only
        time: the next Propagate encodes the slices it needs."""
        error = getattr(job, "error", None)
        if error is None:
            return None
        return _(
            "Background slice encoding stopped after {done} of {n} slices ({kind}: {error}); Propagate "
            "encodes the slices it needs."
        ).format(done=job.done, n=len(job.indices), kind=type(error).__name__, error=error)

    @staticmethod
    def promptsFromMarkups(volumeNode, pointsNode=None, roiNode=None, axis=None):
        """Voxel prompts (``MarkupPrompts``) from markups; see ``SemiSAMSegmentLib/markup_prompts.py``
        for the +/- convention and the axis rule. Raises ``MarkupPromptError`` naming the markup."""
        return markup_prompts.markups_to_prompts(
            mrml_io.volume_from_node(volumeNode), pointsNode, roiNode, axis
        )

    def propagate(
        self,
        volumeNode,
        segmentationNode,
        segmentName="lesion",
        pointsNode=None,
        roiNode=None,
        generalist="litemedsam",
        checkpoint="",
        intensityPreset="auto",
        device="auto",
        axis=None,
        progress=None,
        keepAgreeingSlices=True,
        propagateAcrossSlices=True,
    ):
        """Prompt with markups, propagate with the generalist, write ``segmentName`` in that range only.

        The synchronous form of :meth:`preparePropagate` -> ``propagate_lib.compute`` ->
        :meth:`applyPropagate` (:meth:`startPropagate` runs the middle step on a worker thread).

        Args:
            volumeNode, segmentationNode: the scan and the output.
            segmentName: the segment to write (created when missing).
            pointsNode: ``vtkMRMLMarkupsFiducialNode`` (+/- points) or ``None``.
            roiNode: ``vtkMRMLMarkupsROINode`` (a box) or ``None``.
            generalist: registry name (``litemedsam``; ``sam``/``medsam``/``sam2``/``medsam2`` need
                ``checkpoint``).
            intensityPreset: ``auto``, a CT window name or ``percentile``.
            device: ``auto``, ``cpu`` or ``cuda``.
            axis: slice axis; ``None``: the ROI's thinnest axis, else axial.
            progress: ``progress(fraction, stage)``.
            keepAgreeingSlices: the merge rule inside the range: ``True`` replaces only from each prompted
                slice up to the first slice the new answer agrees with (``semisam.merge``); ``False``
                replaces the whole range.
            propagateAcrossSlices: ``False`` answers and writes the prompted slices only (every slice
                holding a prompt, no tracks); every other slice keeps the segment's voxels.

        Returns:
            :class:`SemiSAMSegmentLib.propagate.PropagateOutcome`.

        Raises:
            MarkupPromptError: no prompt, or a markup outside the volume (names node and point).
        """
        request = self.preparePropagate(
            volumeNode, segmentationNode, segmentName, pointsNode, roiNode, generalist, checkpoint,
            intensityPreset, device, axis, keepAgreeingSlices, propagateAcrossSlices,
        )  # fmt: skip
        return self.applyPropagate(propagate_lib.compute(request, progress))

    def preparePropagate(
        self,
        volumeNode,
        segmentationNode,
        segmentName="lesion",
        pointsNode=None,
        roiNode=None,
        generalist="litemedsam",
        checkpoint="",
        intensityPreset="auto",
        device="auto",
        axis=None,
        keepAgreeingSlices=True,
        propagateAcrossSlices=True,
        storeFolder="",
    ):
        """Main thread: read the scan and the markups, get the generalist; returns a ``PropagateRequest``.
        Errors in the prompts (``MarkupPromptError``) and the generalist's settings are raised here, before
        any computation starts. With ``storeFolder`` the store's active generalist version answers
        (:meth:`activeGeneralistVersion`; the request's ``generalist_version`` names it)."""
        case = self.session(volumeNode)
        markups = markup_prompts.markups_to_prompts(case.volume, pointsNode, roiNode, axis)
        version = self.activeGeneralistVersion(storeFolder, generalist)
        model, window, key = self._engine(
            generalist, checkpoint, intensityPreset, device, markups.prompts.axis, version
        )
        self.prepareOutputSegmentation(volumeNode, segmentationNode)
        current = None
        boxed = {p.slice for p in markups.prompts.prompts if p.box is not None}
        points_only = any(p.slice not in boxed for p in markups.prompts.prompts)
        if not propagateAcrossSlices and points_only:  # anchored on the segment's own slice
            current = propagate_lib.segment_mask(case, volumeNode, segmentationNode, segmentName)
        return propagate_lib.PropagateRequest(
            case,
            markups,
            model,
            key,
            window,
            self.embeddingCache(),
            volumeNode,
            segmentationNode,
            segmentName,
            keep_agreeing=bool(keepAgreeingSlices),
            across_slices=bool(propagateAcrossSlices),
            current=current,
            generalist_version=None if version is None else version.name,
        )

    @staticmethod
    def applyPropagate(request):
        """Main thread: write a computed ``PropagateRequest`` into its segment and put the slices it
        answered first in the review order, by the generalist's confidence (axial propagations across
        slices); returns the outcome."""
        outcome = propagate_lib.apply(request)
        if request.across_slices and request.markups.prompts.axis == "axial":
            node = request.segmentation_node
            review_table.write_review_table(
                node, review_table.read_review(node).after_propagation(request.result)
            )
        return outcome

    def startPropagate(self, *args, **kwargs):
        """:meth:`preparePropagate` now (same arguments), the propagation on a worker thread; returns the
        started ``SemiSAMLib.worker.Worker``. When it is done, call :meth:`applyPropagate` with
        ``worker.result`` on the main thread; after Cancel nothing is written."""
        from SemiSAMLib.worker import Worker

        request = self.preparePropagate(*args, **kwargs)
        return Worker(_("Propagate"), lambda report: propagate_lib.compute(request, report)).start()

    # ------------------------------------------------------------------ accept
    @staticmethod
    def retrainDue(storeFolder: str, every: int) -> bool:
        """Whether the store's labeled-case count has just reached a multiple of ``every`` (0: never)."""
        if not every or every < 1 or not storeFolder:
            return False
        from semisam.store import LabeledStore

        return len(LabeledStore(Path(storeFolder).expanduser()).cases()) % int(every) == 0

    def startRetrainingIfDue(self, storeFolder: str, every: int, settings=None):
        """After an accept: start a retraining run (``SemiSAMLib.training_job``) when :meth:`retrainDue`,
        unless one still runs on the store. Returns the started ``TrainingJob`` or ``None``."""
        from SemiSAMLib import training_job

        if not self.retrainDue(storeFolder, every):
            return None
        running = training_job.attach(storeFolder)
        if running is not None and running.running():
            return None  # the running one will be followed by the next multiple of ``every``
        return training_job.TrainingJob.start(storeFolder, settings or training_job.TrainSettings())

    @staticmethod
    def validationNotice(storeDir):
        """Why the next case should be drawn without Auto-segment (it joins the validation set), or
        ``None``; see :func:`SemiSAMSegmentLib.accept.validation_notice`."""
        return accept_lib.validation_notice(storeDir)

    def accept(self, volumeNode, segmentationNode, storeDir, provenance=None, segmentIds=None) -> str:
        """Add the volume and its segments to the labeled-set store; returns the new case id.

        ``provenance`` (a ``semisam.store.Provenance`` or a dict of its fields, e.g. ``{"annotator":
        "JD"}``) is completed from the case in progress: start/end time, prompts by kind, the model
        version that proposed the mask and the proposal's Dice against the accepted mask. The store is
        created when ``storeDir`` holds none (labels = the segment names). The case in progress ends.
        """
        case = self._sessions.get(volumeNode.GetID()) if volumeNode is not None else None
        if case is not None and case.key != session_lib.volume_key(volumeNode):
            case = None  # the voxels changed since: nothing of that session applies
        record = accept_lib.accept_case(volumeNode, segmentationNode, storeDir, provenance, case, segmentIds)
        self.endSession(volumeNode)
        return record.case_id

# -*- coding: utf-8 -*-
# Copyright: (c) 2026, beamops.cluster contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of beamops.cluster.compare_run: runs the comparison on the controller, in the worker process,
so that its progress lines show as they come (Ansible's Display). Validation and result shaping only; the work
is in plugins/module_utils/compare_runner.py."""
from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.beamops.cluster.plugins.module_utils import compare_options, compare_report, compare_runner
from ansible_collections.beamops.cluster.plugins.module_utils.erl_epmd import DistError
from ansible_collections.beamops.cluster.plugins.module_utils.faults import FaultError, FaultInterrupted

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=compare_options.ARGUMENT_SPEC)
        try:
            targets, settings = compare_options.build(args)
        except compare_runner.CompareError as exc:
            return dict(result, failed=True, msg="compare_run: %s (nothing was deployed and no fault was injected)" % exc)
        if self._task.check_mode:
            return dict(result, changed=False, skipped=True,
                        msg="check mode: the comparison would run %d scenarios x %d on %d targets"
                        % (len(settings.scenarios), settings.repetitions, len(targets)))
        try:
            results = compare_runner.run_comparison(targets, settings, progress=display.display)
        except compare_runner.CompareError as exc:
            return dict(result, failed=True, msg="compare_run: %s" % exc)
        except FaultInterrupted as exc:
            return dict(result, failed=True, msg="compare_run: interrupted by signal %d; every fault in force was "
                                                 "undone" % exc.signum)
        except FaultError as exc:
            return dict(result, failed=True, msg="compare_run: a fault failed: %s" % exc)
        except (DistError, ValueError, OSError) as exc:
            # Whatever was in force has been undone on the way out (the fault session's exit).
            return dict(result, failed=True, msg="compare_run: the run stopped: %s: %s" % (type(exc).__name__, exc))
        try:
            paths = compare_options.write_outputs(results, args["out_dir"])
        except compare_report.ResultsError as exc:
            return dict(result, failed=True, msg="compare_run: the results cannot be reported: %s" % exc)
        result.update(paths)
        result.update(changed=True, summary=compare_options.summary(results), duration_s=results["duration_s"],
                      measured=[t["name"] for t in results["targets"] if t["measured"]],
                      not_measured=dict((t["name"], t["reason"]) for t in results["targets"] if not t["measured"]))
        return result

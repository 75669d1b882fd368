// The project's Python helper scripts (launch/*.py) and the Python that runs
// them: `dsee score --official` (score_official.py), `dsee report --plot`
// (report_plot.py).
#pragma once

#include <string>
#include <vector>

namespace dsee {

// $DSEE_PYTHON, else the Python the build was configured with (the
// checkout's .venv by default).
std::string project_python();
// launch/<name> in the checkout dsee was built from.
std::string project_script(const std::string& name);
// Runs project_python() on launch/<script> with `args`, its output passing
// through; its exit status (128 + signal when killed, 127 when the Python
// cannot be executed).
int python_script_run(const std::string& script, const std::vector<std::string>& args);

}  // namespace dsee

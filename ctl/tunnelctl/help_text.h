// What tunnelctl --help and --version print.
#pragma once

#include <string>

namespace tunnel::tunnelctl {

std::string help_text();
std::string version_text();  // "tunnelctl X.Y.Z (control protocol N)\n"

}  // namespace tunnel::tunnelctl

// Data-free electromagnetic physics for geant4-pybind 0.1.3 (Geant4 11.4.p01).
//
// The wheel ships no Geant4 headers and binds no individual EM process or model to Python, but its
// extension module exports their C++ symbols. This file declares only the constructors and
// non-virtual member functions it calls (signatures as in Geant4 11.4, source/processes/
// electromagnetic), allocates generously sized storage, and lets the real constructors fill it in.
// Every class below derives from its base by single non-virtual inheritance, so a pointer to the
// derived object is also a pointer to its base and reinterpret_cast is exact.
//
// Models chosen because none of them reads a file from the Geant4 data sets (../shared/GEANT4.md):
// photo-effect PEEffectFluo, Klein-Nishina Compton, the default (relativistic) pair production,
// Urban multiple scattering, Moller-Bhabha ionisation, relativistic bremsstrahlung with the LPM
// effect in place of the tabulated Seltzer-Berger model, and two-gamma annihilation.
//
// It links against the wheel's exported symbols, hence the exact pin geant4-pybind==0.1.3.

#include <cstddef>
#include <new>
#include <string>

// Geant4 11's G4String is a std::string with member functions only: same layout, own mangled name.
class G4String : public std::string {
 public:
  using std::string::string;
};

enum G4ProcessType { fElectromagnetic = 2 };  // value from G4ProcessType.hh

class G4ParticleDefinition;
class G4VProcess;
class G4VEmModel;
class G4VMscModel;

class G4Gamma { public: static G4Gamma* Gamma(); };
class G4Electron { public: static G4Electron* Electron(); };
class G4Positron { public: static G4Positron* Positron(); };

class G4PhysicsListHelper {
 public:
  static G4PhysicsListHelper* GetPhysicsListHelper();
  bool RegisterProcess(G4VProcess* process, G4ParticleDefinition* particle);
};

class G4VEmProcess { public: void SetEmModel(G4VEmModel* model, int index); };
class G4VEnergyLossProcess { public: void SetEmModel(G4VEmModel* model, int index); };
class G4VMultipleScattering { public: void SetEmModel(G4VMscModel* model, int index); };

class G4PhotoElectricEffect { public: G4PhotoElectricEffect(const G4String&, G4ProcessType); };
class G4ComptonScattering { public: G4ComptonScattering(const G4String&, G4ProcessType); };
class G4GammaConversion { public: G4GammaConversion(const G4String&, G4ProcessType); };
class G4eMultipleScattering { public: explicit G4eMultipleScattering(const G4String&); };
class G4eIonisation { public: explicit G4eIonisation(const G4String&); };
class G4eBremsstrahlung { public: explicit G4eBremsstrahlung(const G4String&); };
class G4eplusAnnihilation { public: explicit G4eplusAnnihilation(const G4String&); };

class G4PEEffectFluoModel { public: explicit G4PEEffectFluoModel(const G4String&); };
class G4KleinNishinaCompton { public: G4KleinNishinaCompton(const G4ParticleDefinition*, const G4String&); };
class G4UrbanMscModel { public: explicit G4UrbanMscModel(const G4String&); };
class G4eBremsstrahlungRelModel {
 public:
  G4eBremsstrahlungRelModel(const G4ParticleDefinition*, const G4String&);
};

namespace {

// Far above sizeof() of any of these classes in Geant4 11.4 (the largest, G4VEnergyLossProcess,
// is about 1 kB). Geant4 deletes them through their virtual destructors; operator delete ignores
// the size it is given, so the over-allocation is harmless.
constexpr std::size_t kStorage = 16384;

template <typename T, typename... Args>
T* make(Args&&... args) {
  void* storage = ::operator new(kStorage);
  return new (storage) T(static_cast<Args&&>(args)...);
}

template <typename T>
G4VProcess* as_process(T* p) { return reinterpret_cast<G4VProcess*>(p); }

template <typename T>
G4ParticleDefinition* as_particle(T* p) { return reinterpret_cast<G4ParticleDefinition*>(p); }

void add_lepton_processes(G4PhysicsListHelper* helper, G4ParticleDefinition* particle, bool positron) {
  auto* msc = make<G4eMultipleScattering>(G4String("msc"));
  reinterpret_cast<G4VMultipleScattering*>(msc)->SetEmModel(
      reinterpret_cast<G4VMscModel*>(make<G4UrbanMscModel>(G4String("UrbanMsc"))), 0);
  helper->RegisterProcess(as_process(msc), particle);

  helper->RegisterProcess(as_process(make<G4eIonisation>(G4String("eIoni"))), particle);

  auto* brem = make<G4eBremsstrahlung>(G4String("eBrem"));
  // Index 0 covers the whole energy range, replacing the data-driven Seltzer-Berger model below 1 GeV.
  reinterpret_cast<G4VEnergyLossProcess*>(brem)->SetEmModel(
      reinterpret_cast<G4VEmModel*>(
          make<G4eBremsstrahlungRelModel>(static_cast<const G4ParticleDefinition*>(nullptr), G4String("eBremLPM"))),
      0);
  helper->RegisterProcess(as_process(brem), particle);

  if (positron) {
    helper->RegisterProcess(as_process(make<G4eplusAnnihilation>(G4String("annihil"))), particle);
  }
}

}  // namespace

extern "C" {

// Called from the Python G4VPhysicsConstructor's ConstructProcess, after the particles exist.
// Returns 0; Geant4 aborts the process on a fatal error rather than returning.
int surrogate_construct_em_datafree() {
  G4PhysicsListHelper* helper = G4PhysicsListHelper::GetPhysicsListHelper();

  G4ParticleDefinition* gamma = as_particle(G4Gamma::Gamma());
  auto* phot = make<G4PhotoElectricEffect>(G4String("phot"), fElectromagnetic);
  reinterpret_cast<G4VEmProcess*>(phot)->SetEmModel(
      reinterpret_cast<G4VEmModel*>(make<G4PEEffectFluoModel>(G4String("PEEffectFluo"))), 0);
  helper->RegisterProcess(as_process(phot), gamma);

  auto* compt = make<G4ComptonScattering>(G4String("compt"), fElectromagnetic);
  reinterpret_cast<G4VEmProcess*>(compt)->SetEmModel(
      reinterpret_cast<G4VEmModel*>(
          make<G4KleinNishinaCompton>(static_cast<const G4ParticleDefinition*>(nullptr), G4String("Klein-Nishina"))),
      0);
  helper->RegisterProcess(as_process(compt), gamma);

  // G4GammaConversion's default models are analytic: no data file (../shared/GEANT4.md).
  helper->RegisterProcess(as_process(make<G4GammaConversion>(G4String("conv"), fElectromagnetic)), gamma);

  add_lepton_processes(helper, as_particle(G4Electron::Electron()), false);
  add_lepton_processes(helper, as_particle(G4Positron::Positron()), true);
  return 0;
}

}  // extern "C"
